'use strict';
// Node + uWebSockets.js doing the ticker.price work of work.js; prints "READY <port>".
//   node uws_server.js --port 0 --symbols 512 --weight-limit 1000000000
const uWS = require('@btc-vision/uwebsockets.js');
const { Work, parseArgs } = require('./work.js');

const opts = parseArgs(process.argv.slice(2));
const work = new Work(opts.symbols, opts.weightLimit);
const decoder = new TextDecoder();

uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: opts.maxSize,
  idleTimeout: 0,
  upgrade: (res, req, context) => {
    const ip = Buffer.from(res.getRemoteAddressAsText()).toString();
    res.upgrade({ ip }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'), context);
  },
  message: (ws, message) => {
    ws.send(work.answer(decoder.decode(message), ws.getUserData().ip), false);
  },
}).listen(opts.host, opts.port, (token) => {
  if (!token) {
    process.stderr.write(`cannot listen on ${opts.host}:${opts.port}\n`);
    process.exit(1);
  }
  process.stdout.write(`READY ${uWS.us_socket_local_port(token)}\n`);
});
process.on('SIGTERM', () => process.exit(0));
