"""A small MCP server for Switchyard's tests, on the official `mcp` package.

Usage: mcp_server.py stdio | mcp_server.py http PORT
Tools: `add` (two integers), `whoami` (this process's id, so a test can see
a restart), `crash` (the process exits at once), `grow` (adds the tool
`triple` and tells the client its tools changed).
"""

import inspect
import os
import sys

from mcp.server.mcpserver import Context, MCPServer

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


def triple(n: int) -> str:
    """Three times n."""
    return str(3 * n)


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool `triple` and tells the client the tools changed."""
    server.add_tool(triple)
    # The notification of the 2025-11-25 protocol that the gateway speaks
    # (newer clients subscribe instead).
    notified = ctx.session.send_tool_list_changed()
    if inspect.isawaitable(notified):
        await notified
    return "grown"


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.run("streamable-http", port=int(sys.argv[2]), host="127.0.0.1")
    else:
        server.run("stdio")
