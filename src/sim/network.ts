// Fluid network model. Every link direction is a resource with a capacity; a flow (one
// TCP connection with bytes queued) crosses the resources of its route. Backlogged flows
// share every resource max-min fairly; rates are recomputed only for the connected
// component of flows touched when one starts or stops sending.

import type { EventQueue } from './event-queue.ts';

export class Resource {
  /** Flows currently sending through this resource. */
  readonly flows: Flow[] = [];
  mark = 0;
  /** Scratch space of the max-min computation. */
  left = 0;
  users = 0;
  /** Capacity in bytes per millisecond, as currently available. */
  capacity: number;
  /**
   * A resource that loses `interference` × this one's throughput from its capacity: a
   * host's receive direction while it also transmits (its ACKs and the transmit work
   * share the path the incoming data needs).
   */
  coupled: { resource: Resource; interference: number } | undefined;
  constructor(
    readonly name: string,
    readonly nominal: number,
  ) {
    this.capacity = nominal;
  }
}

interface Item {
  end: number;
  onSent: () => void;
}

export class Flow {
  rate = 0; // bytes per ms
  private transmitted = 0;
  private queued = 0;
  private lastUpdate = 0;
  private readonly items: Item[] = [];
  private head = 0;
  version = 0;
  active = false;
  mark = 0;
  /** Scratch space of the max-min computation. */
  slot = 0;
  fixed = false;

  constructor(
    readonly resources: Resource[],
    /** Upper bound on this flow's rate in bytes per ms (a per-migration bandwidth cap). */
    readonly cap: number,
  ) {}

  /** Bytes queued and not yet on the wire. */
  get backlog(): number {
    return this.queued - this.transmitted;
  }

  /** Bytes on the wire by `now`, and bytes queued in all. */
  progress(now: number): { sent: number; queued: number } {
    const sent = this.active
      ? Math.min(this.queued, this.transmitted + this.rate * (now - this.lastUpdate))
      : this.transmitted;
    return { sent, queued: this.queued };
  }

  advance(now: number): void {
    if (this.active)
      this.transmitted = Math.min(this.queued, this.transmitted + this.rate * (now - this.lastUpdate));
    this.lastUpdate = now;
  }

  push(bytes: number, onSent: () => void): void {
    this.queued += bytes;
    this.items.push({ end: this.queued, onSent });
  }

  /** Bytes that go out ahead of everything still queued (they delay it by their size). */
  pushAhead(bytes: number): void {
    this.queued += bytes;
    for (let i = this.head; i < this.items.length; i++) this.items[i].end += bytes;
  }

  /** The rate this flow's path offers now: its share when sending, else its bottleneck. */
  pathRate(): number {
    if (this.active && this.rate > 0) return this.rate;
    let rate = this.cap;
    for (const r of this.resources) rate = Math.min(rate, r.capacity);
    return rate;
  }

  get empty(): boolean {
    return this.head === this.items.length;
  }

  /** Bytes still to transmit before the head item is fully sent. */
  untilHead(): number {
    return Math.max(0, this.items[this.head].end - this.transmitted);
  }

  shift(): Item {
    const it = this.items[this.head++];
    this.transmitted = it.end;
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    return it;
  }
}

export class Network {
  private stamp = 0;

  constructor(private readonly queue: EventQueue) {}

  /** Queues `bytes` on `flow`; `onSent` runs when the last of them has left. */
  send(flow: Flow, bytes: number, onSent: () => void): void {
    flow.push(bytes, onSent);
    if (flow.active) return;
    flow.active = true;
    flow.advance(this.queue.now);
    for (const r of flow.resources) r.flows.push(flow);
    this.rebalance(flow.resources);
  }

  /**
   * Sends `bytes` on a priority lane beside `flow` (same path): they go out first at the
   * path's rate and push what `flow` has queued back by their size. `onArrived` runs when
   * they have crossed the path (`latencyMs` later). Small urgent messages cost no
   * rebalancing this way.
   */
  sendAhead(flow: Flow, bytes: number, latencyMs: number, onArrived: () => void): void {
    const now = this.queue.now;
    const dt = bytes / flow.pathRate();
    if (flow.active) {
      flow.advance(now);
      flow.pushAhead(bytes);
      this.schedule(flow);
    }
    this.queue.at(now + dt + latencyMs, onArrived);
  }

  private complete(flow: Flow, version: number): void {
    if (version !== flow.version) return; // rescheduled since
    flow.advance(this.queue.now);
    const item = flow.shift();
    item.onSent(); // may queue more on this flow
    if (!flow.empty) {
      this.schedule(flow);
      return;
    }
    flow.active = false;
    flow.rate = 0;
    flow.version++;
    for (const r of flow.resources) r.flows.splice(r.flows.indexOf(flow), 1);
    this.rebalance(flow.resources);
  }

  private schedule(flow: Flow): void {
    const v = ++flow.version;
    const remaining = flow.untilHead();
    const dt = flow.rate > 0 ? remaining / flow.rate : Number.POSITIVE_INFINITY;
    if (dt === Number.POSITIVE_INFINITY) return;
    this.queue.at(this.queue.now + dt, () => this.complete(flow, v));
  }

  /** Recomputes max-min fair rates for every flow connected to `seeds`. */
  private rebalance(seeds: Resource[]): void {
    // Throughput changes coupled capacities, which may move rates again: settle in a few passes.
    for (let pass = 0; pass < 4 && seeds.length > 0; pass++) {
      const resources = this.share(seeds);
      seeds = [];
      for (const r of resources) {
        const c = r.coupled;
        if (!c) continue;
        let used = 0;
        for (const f of r.flows) used += f.rate;
        const cap = Math.max(0, c.resource.nominal - c.interference * used);
        if (Math.abs(cap - c.resource.capacity) > 1e-6 * c.resource.nominal) {
          c.resource.capacity = cap;
          seeds.push(c.resource);
        }
      }
    }
  }

  /** Max-min fair rates for the component of flows connected to `seeds`; returns its resources. */
  private share(seeds: Resource[]): Resource[] {
    const stamp = ++this.stamp;
    const flows: Flow[] = [];
    const resources: Resource[] = [];
    const stack = [...seeds];
    for (const r of stack) r.mark = stamp;
    while (stack.length > 0) {
      const r = stack.pop()!;
      resources.push(r);
      for (const f of r.flows) {
        if (f.mark === stamp) continue;
        f.mark = stamp;
        flows.push(f);
        for (const r2 of f.resources)
          if (r2.mark !== stamp) {
            r2.mark = stamp;
            stack.push(r2);
          }
      }
    }
    const now = this.queue.now;
    for (const f of flows) f.advance(now);
    const rates = maxMinRates(flows, resources);
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      if (f.rate === rates[i] && f.version > 0) continue;
      f.rate = rates[i];
      this.schedule(f);
    }
    return resources;
  }
}

/** Progressive filling: repeatedly saturate the tightest resource (or flow cap). */
export function maxMinRates(flows: Flow[], resources: Resource[]): number[] {
  if (flows.length === 1) {
    let rate = flows[0].cap;
    for (const r of flows[0].resources) rate = Math.min(rate, r.capacity);
    return [rate];
  }
  // scratch state lives on the objects themselves: no maps on this hot path
  const rates = new Array<number>(flows.length).fill(0);
  for (let i = 0; i < flows.length; i++) {
    flows[i].slot = i;
    flows[i].fixed = false;
  }
  for (const r of resources) {
    r.left = r.capacity;
    r.users = r.flows.length;
  }
  let unfixed = flows.length;
  while (unfixed > 0) {
    let share = Number.POSITIVE_INFINITY;
    let bottleneck: Resource | undefined;
    for (const r of resources) {
      if (r.users === 0) continue;
      const s = r.left / r.users;
      if (s < share) {
        share = s;
        bottleneck = r;
      }
    }
    let capped: Flow | undefined;
    for (const f of flows)
      if (!f.fixed && f.cap < share) {
        share = f.cap;
        capped = f;
      }
    const fix = (f: Flow) => {
      rates[f.slot] = share;
      f.fixed = true;
      unfixed--;
      for (const r of f.resources) {
        r.left = Math.max(0, r.left - share);
        r.users--;
      }
    };
    if (capped) fix(capped);
    else if (bottleneck) {
      for (const f of bottleneck.flows) if (!f.fixed) fix(f);
    } else break;
  }
  return rates;
}
