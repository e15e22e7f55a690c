// A migration lane without a socket, for driver and lane tests: it records what is sent,
// delivers what the test hands it, and ends (or breaks) when the test says.

import type { Lane, Message } from '../../src/engine/messages.ts';
import type { LaneConnection, TransportError } from '../../src/host/transport.ts';

export interface FakeLane {
  conn: LaneConnection;
  /** Messages sent on it, in order. */
  sent: Message[];
  state: { readPaused: boolean; destroyed: boolean; closed: boolean };
  /** A message arrives from the peer. */
  deliver(m: Message, seq?: number): void;
  /** The connection ends (with the error that ended it, if any). */
  end(error?: TransportError | Error): void;
}

export function fakeLane(lane: Lane = 'bulk'): FakeLane {
  const onMessage: ((m: Message, seq: number) => void)[] = [];
  const onClose: ((e?: TransportError) => void)[] = [];
  const sent: Message[] = [];
  const state = { readPaused: false, destroyed: false, closed: false };
  const conn: LaneConnection = {
    lane,
    migrationId: 'm1',
    peerCapabilities: 0,
    remoteAddress: '127.0.0.1:1',
    bufferedBytes: 0,
    error: undefined,
    send: (m) => {
      sent.push(m);
      return true;
    },
    onDrain: () => {},
    onMessage: (cb) => onMessage.push(cb),
    pauseReading: () => {
      state.readPaused = true;
    },
    resumeReading: () => {
      state.readPaused = false;
    },
    onError: () => {},
    onClose: (cb) => onClose.push(cb),
    close: () => {
      state.closed = true;
    },
    destroy: () => {
      state.destroyed = true;
    },
  };
  return {
    conn,
    sent,
    state,
    deliver(m, seq = 0) {
      for (const cb of onMessage) cb(m, seq);
    },
    end(error) {
      for (const cb of onClose) cb(error as TransportError | undefined);
    },
  };
}
