"""The native Handle protocol (RFC 3652) over UDP and TCP: wire codec and servers."""
