// The simulator's clock and agenda: a binary min-heap on typed arrays, ordered by time
// and then by scheduling order, so runs are deterministic and ties resolve FIFO.

export type Action = () => void;

export class EventQueue {
  now = 0;
  private times = new Float64Array(1024);
  private seqs = new Float64Array(1024);
  private slots = new Int32Array(1024);
  private size = 0;
  private seq = 0;
  private actions: (Action | undefined)[] = [];
  private free: number[] = [];
  processed = 0;
  /** Nothing after this time runs (it may be brought forward while running). */
  horizon = Number.POSITIVE_INFINITY;

  get pending(): number {
    return this.size;
  }

  /** Runs `action` at absolute time `at` (ms); never earlier than now. */
  at(at: number, action: Action): void {
    if (!(at >= this.now)) at = this.now; // NaN and the past both mean "now"
    if (this.size === this.times.length) this.grow();
    let slot = this.free.pop();
    if (slot === undefined) {
      slot = this.actions.length;
      this.actions.push(action);
    } else this.actions[slot] = action;
    let i = this.size++;
    const s = this.seq++;
    // sift up
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.times[p] < at || (this.times[p] === at && this.seqs[p] < s)) break;
      this.times[i] = this.times[p];
      this.seqs[i] = this.seqs[p];
      this.slots[i] = this.slots[p];
      i = p;
    }
    this.times[i] = at;
    this.seqs[i] = s;
    this.slots[i] = slot;
  }

  after(delay: number, action: Action): void {
    this.at(this.now + delay, action);
  }

  /**
   * Runs events in order until none is left or the next is after `until`; when events
   * remain, the clock then stands at `until`.
   */
  run(until = this.horizon): void {
    while (this.size > 0 && this.times[0] <= Math.min(until, this.horizon)) {
      this.now = this.times[0];
      const slot = this.slots[0];
      const action = this.actions[slot]!;
      this.actions[slot] = undefined;
      this.free.push(slot);
      this.pop();
      this.processed++;
      action();
    }
    const end = Math.min(until, this.horizon);
    if (this.size > 0 && end > this.now) this.now = end;
  }

  private pop(): void {
    const n = --this.size;
    if (n === 0) return;
    const t = this.times[n];
    const s = this.seqs[n];
    const sl = this.slots[n];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (
        c + 1 < n &&
        (this.times[c + 1] < this.times[c] ||
          (this.times[c + 1] === this.times[c] && this.seqs[c + 1] < this.seqs[c]))
      )
        c++;
      if (t < this.times[c] || (t === this.times[c] && s < this.seqs[c])) break;
      this.times[i] = this.times[c];
      this.seqs[i] = this.seqs[c];
      this.slots[i] = this.slots[c];
      i = c;
    }
    this.times[i] = t;
    this.seqs[i] = s;
    this.slots[i] = sl;
  }

  private grow(): void {
    const n = this.times.length * 2;
    const t = new Float64Array(n);
    t.set(this.times);
    const q = new Float64Array(n);
    q.set(this.seqs);
    const s = new Int32Array(n);
    s.set(this.slots);
    this.times = t;
    this.seqs = q;
    this.slots = s;
  }
}
