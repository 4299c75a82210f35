"""Scale-out: worker processes on one machine, nodes sharing one Redis, load balancers.

* ``supervisor`` + ``reuseport``: ``--workers N``, the sockets and the per-IP pin;
* ``node`` (``shared_limiter``, ``book_bus``, ``feed_lease``, ``redis_client``,
  ``scripts``): ``--redis URL``, one budget, one book and one feed owner for the cluster;
* ``proxy`` + ``proxy_gate``: ``--trusted-proxy``, forwarding headers and the PROXY protocol.

Only ``redis_client`` imports ``redis``, and only ``--redis`` imports it: importing this
package costs nothing. See docs/CLUSTER.md.
"""
