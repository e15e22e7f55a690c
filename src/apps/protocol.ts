// How a guest app's clients talk to it: a wire protocol splits the bytes of a client
// connection into requests. It runs at the VM's network device (the host side of the
// guest's NIC), so only whole requests enter the guest; the bytes of an incomplete request
// are connection state and move with the VM at the switchover.
//
// Pure module: no Node imports.

/** One request as the guest app receives it, and what the connection does after its reply. */
export interface ClientRequest {
  args: Uint8Array[];
  /** Close the connection once this request's reply is written (HTTP `Connection: close`). */
  close?: boolean;
}

export interface FramerResult {
  /** Complete requests, in arrival order. */
  requests: ClientRequest[];
  /**
   * The input was malformed: `reply` is written after the replies to `requests`, then the
   * connection closes. The framer takes no further input.
   */
  error?: { message: string; reply: Uint8Array };
}

/** A connection's request parser: streaming, never throws on input, bounded. */
export interface Framer {
  push(bytes: Uint8Array): FramerResult;
  /** The bytes of the incomplete request at the end of the stream (a copy). */
  pending(): Uint8Array;
}

export interface WireProtocol {
  readonly name: string;
  framer(): Framer;
}
