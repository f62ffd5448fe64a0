// A persistent raw HTTP/1.1 client connection for keep-alive / connection
// limit tests: send bytes, wait for the next complete response, see when the
// server closes.
import net from 'node:net';

import { parseResponses } from './harness.mjs';

export class Conn {
  /** Connects to 127.0.0.1:port; await conn.ready before writing. */
  constructor(port, host = '127.0.0.1') {
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.closedAt = null;
    this.responses = []; // parsed, in order
    this.waiters = [];
    this.sock = net.connect({ port, host });
    this.sock.setNoDelay(true);
    this.ready = new Promise((resolve, reject) => {
      this.sock.once('connect', resolve);
      this.sock.once('error', reject);
    });
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse(false);
    });
    const onClose = () => {
      if (this.closed) return;
      this.closed = true;
      this.closedAt = Date.now();
      this.parse(true);
      this.wake();
    };
    this.sock.on('end', onClose);
    this.sock.on('close', onClose);
    this.sock.on('error', onClose);
  }

  parse(closed) {
    try {
      const { responses, consumed } = parseResponses(this.buf, closed);
      if (responses.length) {
        this.responses.push(...responses);
        this.buf = this.buf.subarray(consumed);
        this.wake();
      }
    } catch (e) {
      this.error = e;
      this.wake();
    }
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  write(bytes) {
    return new Promise((resolve, reject) => this.sock.write(bytes, (e) => (e ? reject(e) : resolve())));
  }

  /** Resolves when there are at least n responses in total, or the connection closed, or after ms. → bool (got them) */
  waitResponses(n, ms = 5000) {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve(this.responses.length >= n);
      }, ms);
      const check = () => {
        if (this.responses.length >= n || this.closed || this.error) {
          clearTimeout(t);
          resolve(this.responses.length >= n);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  /** Resolves true when the server closed the connection within ms. */
  waitClosed(ms = 5000) {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve(this.closed);
      }, ms);
      const check = () => {
        if (this.closed) {
          clearTimeout(t);
          resolve(true);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  /** Sends one request and returns its response (throws on close/timeout). */
  async request(bytes, ms = 5000) {
    const want = this.responses.length + 1;
    await this.write(bytes);
    if (!(await this.waitResponses(want, ms)))
      throw new Error(`no response #${want} within ${ms} ms (closed=${this.closed}) ${this.error?.message || ''}`);
    return this.responses[want - 1];
  }

  close() {
    this.sock.destroy();
  }
}
