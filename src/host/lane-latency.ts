// Distance between hosts, emulated: a lane whose messages reach their handlers a fixed
// time after they arrived. This kernel has no netem, so the delay is added here, in user
// space, on the receiving side of every lane a host holds: two hosts each adding L see a
// round trip of 2 L more than the wire's. Order is kept, a closed or failed lane reports
// it only after the messages that came before, and a long queue stops the reading, so
// TCP pushes back on the sender as it would over a long link.

import type { Message } from '../engine/messages.ts';
import { type LaneConnection, TransportError } from './transport.ts';

/** Messages held before the lane stops reading (resumes at half). */
export const LATENCY_QUEUE_LIMIT = 64;
/** Largest latency a host adds (ms): beyond, a lane's own timeouts would fire. */
export const MAX_LANE_LATENCY_MS = 1000;

/** Whether `ms` is a latency a host can add: a number from 0 to MAX_LANE_LATENCY_MS. */
export function isLaneLatency(ms: number): boolean {
  return Number.isFinite(ms) && ms >= 0 && ms <= MAX_LANE_LATENCY_MS;
}

/** Refuses a latency a host cannot add, naming it. */
export function checkLaneLatency(ms: number): void {
  if (!isLaneLatency(ms))
    throw new RangeError(`lane latency ${ms} ms: must be between 0 and ${MAX_LANE_LATENCY_MS}`);
}

interface Held {
  msg: Message;
  seq: number;
  due: number;
}

/**
 * `inner`, with every incoming message delivered `latencyMs` after it arrived (Node's
 * timers: whole milliseconds at best, later under load). Sending is untouched.
 */
export function delayedLane(
  inner: LaneConnection,
  latencyMs: number,
  now: () => number = () => performance.now(),
): LaneConnection {
  checkLaneLatency(latencyMs);
  if (latencyMs === 0) return inner;
  const queue: Held[] = [];
  const messageHandlers: ((msg: Message, seq: number) => void)[] = [];
  const closeHandlers: ((error?: TransportError) => void)[] = [];
  const errorHandlers: ((e: TransportError) => void)[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let paused = false; // by the lane's user
  let stalled = false; // by the queue's length
  let dropped = false; // closed or destroyed here: nothing more is delivered
  /** The inner lane ended: [its error], reported once the queue is empty. */
  let ended: [TransportError | undefined] | undefined;
  /** The end as reported here: [its error]. */
  let reported: [TransportError | undefined] | undefined;
  const failure = () => reported?.[0];

  const report = (error: TransportError | undefined) => {
    reported = [error];
    if (error) for (const cb of errorHandlers) cb(error);
    for (const cb of closeHandlers) cb(error);
  };

  const settleReading = () => {
    const wantStall = queue.length >= LATENCY_QUEUE_LIMIT;
    if (wantStall && !stalled) {
      stalled = true;
      inner.pauseReading();
    } else if (stalled && queue.length < LATENCY_QUEUE_LIMIT / 2) {
      stalled = false;
      if (!paused) inner.resumeReading();
    }
  };

  const pump = () => {
    timer = undefined;
    if (reported) return;
    while (!dropped && !paused && messageHandlers.length > 0 && queue.length > 0) {
      const head = queue[0];
      const wait = head.due - now();
      if (wait > 0) {
        timer = setTimeout(pump, wait);
        break;
      }
      queue.shift();
      try {
        for (const cb of messageHandlers) cb(head.msg, head.seq);
      } catch (e) {
        // as the lane itself does: a handler that throws closes it
        drop();
        inner.destroy();
        report(
          new TransportError(
            'handler',
            `${inner.lane} lane: message handler threw: ${(e as Error)?.message ?? e}`,
            {
              cause: e,
            },
          ),
        );
        return;
      }
    }
    settleReading();
    if (queue.length === 0 && ended) {
      const [error] = ended;
      ended = undefined;
      report(error);
    }
  };
  const schedule = () => {
    if (timer === undefined) timer = setTimeout(pump, Math.max(0, (queue[0]?.due ?? now()) - now()));
  };

  inner.onMessage((msg, seq) => {
    if (dropped) return;
    queue.push({ msg, seq, due: now() + latencyMs });
    settleReading();
    schedule();
  });
  // the end of a connection travels behind its data (at once when nothing is delivered)
  inner.onClose((error) => {
    if (reported) return;
    if (dropped) report(error);
    else {
      ended = [error];
      schedule();
    }
  });

  const drop = () => {
    dropped = true;
    queue.length = 0;
    clearTimeout(timer);
    timer = undefined;
    if (ended) {
      const [error] = ended;
      ended = undefined;
      queueMicrotask(() => report(error));
    }
  };

  return {
    get lane() {
      return inner.lane;
    },
    get migrationId() {
      return inner.migrationId;
    },
    get peerCapabilities() {
      return inner.peerCapabilities;
    },
    get remoteAddress() {
      return inner.remoteAddress;
    },
    get bufferedBytes() {
      return inner.bufferedBytes;
    },
    get error() {
      return reported ? failure() : undefined;
    },
    send: (msg, written) => inner.send(msg, written),
    onDrain: (cb) => inner.onDrain(cb),
    onMessage(cb) {
      messageHandlers.push(cb);
      if (messageHandlers.length === 1) queueMicrotask(schedule);
    },
    pauseReading() {
      paused = true;
      inner.pauseReading();
    },
    resumeReading() {
      if (!paused) return;
      paused = false;
      if (!stalled) inner.resumeReading();
      schedule();
    },
    onError(cb) {
      errorHandlers.push(cb);
      const e = failure();
      if (e) queueMicrotask(() => cb(e));
    },
    onClose(cb) {
      closeHandlers.push(cb);
      if (reported) {
        const [e] = reported;
        queueMicrotask(() => cb(e));
      }
    },
    close() {
      drop();
      inner.close();
    },
    destroy() {
      drop();
      inner.destroy();
    },
  };
}
