'use strict';
// Node + ws doing the ticker.price work of work.js; prints "READY <port>".
//   node ws_server.js --port 0 --symbols 512 --weight-limit 1000000000
const { WebSocketServer } = require('ws');
const { Work, parseArgs } = require('./work.js');

const opts = parseArgs(process.argv.slice(2));
const work = new Work(opts.symbols, opts.weightLimit);

const server = new WebSocketServer({
  host: opts.host, port: opts.port, perMessageDeflate: false, maxPayload: opts.maxSize,
});
server.on('connection', (ws, req) => {
  const ip = req.socket.remoteAddress;
  ws.on('message', (data) => ws.send(work.answer(data.toString(), ip)));
});
server.on('listening', () => process.stdout.write(`READY ${server.address().port}\n`));
server.on('error', (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
