"""The only code that touches sockets: the WebSocket API server and the REST surface."""
