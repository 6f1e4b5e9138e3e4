"""The per-guest local API: each guest may ask the agent about itself, and nothing else.

``docs/architecture.md`` ("The per-guest local API"). The pure parts -- the HTTP reader
(:mod:`.httpwire`), the serial framing (:mod:`.frames`), the rules (:mod:`.policy`), the
endpoints (:mod:`.api`), the peer check (:mod:`.identity`) -- sit under the event loop
(:mod:`.server`), the placement of a container's socket (:mod:`.placement`) and the
supervisor that keeps one listener per enabled, running guest (:mod:`.supervisor`).
"""
