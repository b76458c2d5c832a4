"""A small MCP server for Switchyard's tests, on the official `mcp` package.

Usage: mcp_server.py stdio | mcp_server.py http PORT
Tools: `add` (two integers), `whoami` (this process's id, so a test can see
a restart), `crash` (the process exits at once).
"""

import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("switchyard-test-tools")


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers exactly."""
    return str(a + b)


@server.tool()
def whoami() -> str:
    """The server process's id."""
    return str(os.getpid())


@server.tool()
def crash() -> str:
    """Ends the server process at once, as a crash would."""
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.run("streamable-http", port=int(sys.argv[2]), host="127.0.0.1")
    else:
        server.run("stdio")
