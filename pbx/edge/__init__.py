"""The SIP edge: transports (UDP, TCP, TLS), per-source protection, and the endpoint that parses
what arrives and runs the transaction layer before handing requests to their handlers."""
