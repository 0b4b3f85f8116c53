"""A real MCP client (the mcp Python SDK), run inside a session: for each
server of /cubbi/mcp.json (or those named), list its tools and call
get_current_time; one JSON line per server.  --sse uses each server's
sse_url instead of its url."""
import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


async def one(s, sse):
    headers = {k: os.environ[v["env"]] for k, v in (s.get("headers") or {}).items()}
    if s["transport"] == "stdio":
        env = dict(os.environ, **{k: os.environ[v["env"]] for k, v in s["env"].items()})
        cm = stdio_client(StdioServerParameters(command=s["command"], args=s["args"], env=env))
    elif sse or s["transport"] == "sse":
        cm = sse_client(s["sse_url"], headers=headers)
    else:
        cm = streamable_http_client(s["url"])
    async with cm as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            r = await session.call_tool("get_current_time", {"timezone": "UTC"})
            error = getattr(r, "is_error", getattr(r, "isError", False))
            return {"name": s["name"], "transport": "sse" if sse else s["transport"],
                    "tools": tools, "ok": not error, "text": r.content[0].text}


def main(argv):
    sse = "--sse" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    with open(os.environ["CUBBI_MCP_FILE"]) as fh:
        doc = json.load(fh)
    for s in doc["servers"]:
        if not wanted or s["name"] in wanted:
            print(json.dumps(asyncio.run(one(s, sse))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
