"""sfu: a self-hosted WebRTC selective forwarding unit (WHIP in, WHEP out).

    import sfu
    async with sfu.Server(sfu.Config.for_tests()) as server:
        print(server.whip_url("shop1"), server.whep_url("shop1"))
"""

__version__ = "0.1.0"

__all__ = ["Config", "Server", "__version__"]


def __getattr__(name: str):
    # Lazy: `sfu token` and `sfu --help` should not pay for the server's imports.
    if name == "Server":
        from .app import Server

        return Server
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(name)
