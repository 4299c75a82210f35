'use strict';
// The ticker.price work both Node peers do, the same as benchmarks/naive_server.py: parse the
// request, look the symbol up, echo the id with its JSON type, count the caller's weight this
// minute and answer with a Binance-shaped envelope (id, status, result/error, rateLimits).

function makePrices(n) {
  const prices = new Map([['BTCUSDT', '97000.10'], ['ETHUSDT', '3500.25']]);
  for (let i = 1; i <= Math.max(0, n - 2); i++) {
    prices.set(`SYM${String(i).padStart(4, '0')}USDT`, (i * 1.25 + 0.01).toFixed(2));
  }
  return new Map([...prices].slice(0, n));
}

class Work {
  constructor(symbols, limit) {
    this.prices = makePrices(symbols);
    this.time = Date.now();
    this.limit = limit;
    this.minute = -1;
    this.used = new Map();
  }

  charge(ip, weight) {
    const minute = Math.floor(Date.now() / 60000);
    if (minute !== this.minute) {
      this.minute = minute;
      this.used = new Map();
    }
    const count = (this.used.get(ip) || 0) + weight;
    this.used.set(ip, count);
    return count;
  }

  reply(id, status, body, count) {
    const envelope = { id, status };
    envelope[status === 200 ? 'result' : 'error'] = body;
    if (count !== null) {
      envelope.rateLimits = [{
        rateLimitType: 'REQUEST_WEIGHT', interval: 'MINUTE', intervalNum: 1,
        limit: this.limit, count,
      }];
    }
    return JSON.stringify(envelope);
  }

  answer(text, ip) {
    let req;
    try {
      req = JSON.parse(text);
    } catch {
      req = null;
    }
    if (req === null || typeof req !== 'object' || Array.isArray(req)) {
      return this.reply(null, 400, { code: -1000, msg: 'Invalid JSON request.' }, null);
    }
    const id = req.id === undefined ? null : req.id;
    if (req.method !== 'ticker.price') {
      return this.reply(id, 400, { code: -1000, msg: 'Unknown method.' }, 0);
    }
    const params = req.params || {};
    const symbol = typeof params === 'object' && params.symbol !== undefined ? params.symbol : null;
    const count = this.charge(ip, symbol === null ? 2 : 1);
    if (count > this.limit) {
      const msg = `Too many requests; current limit of IP(${ip}) is ${this.limit} requests per `
        + 'minute. Please use the websocket for live updates to avoid polling the API.';
      return this.reply(id, 429, { code: -1003, msg }, count);
    }
    if (symbol === null) {
      const all = [];
      for (const [s, p] of this.prices) all.push({ symbol: s, price: p, time: this.time });
      return this.reply(id, 200, all, count);
    }
    const price = this.prices.get(symbol);
    if (price === undefined) {
      return this.reply(id, 400, { code: -1121, msg: 'Invalid symbol.' }, count);
    }
    return this.reply(id, 200, { symbol, price, time: this.time }, count);
  }
}

// --host H --port N --symbols N --weight-limit N --max-size N, as naive_server.py takes them.
function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 9000, symbols: 60, weightLimit: 2400, maxSize: 1 << 16 };
  const keys = { '--host': 'host', '--port': 'port', '--symbols': 'symbols',
    '--weight-limit': 'weightLimit', '--max-size': 'maxSize' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = keys[argv[i]];
    if (key === undefined || i + 1 >= argv.length) {
      process.stderr.write(`usage: [--host H] [--port N] [--symbols N] [--weight-limit N] [--max-size N]; got ${argv[i]}\n`);
      process.exit(2);
    }
    opts[key] = key === 'host' ? argv[i + 1] : Number.parseInt(argv[i + 1], 10);
    if (key !== 'host' && !Number.isSafeInteger(opts[key])) {
      process.stderr.write(`${argv[i]}: not an integer: ${argv[i + 1]}\n`);
      process.exit(2);
    }
  }
  return opts;
}

module.exports = { Work, parseArgs };
