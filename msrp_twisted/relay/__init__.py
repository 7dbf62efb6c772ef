"""RFC 4976 relay: authentication, sessions and forwarding."""
