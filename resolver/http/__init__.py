"""The HTTP side: the aiohttp app, its routes, authentication, sessions, body and time limits."""
