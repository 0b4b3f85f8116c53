"""The /mcp routes: each user's MCP server definitions on the service
(cubbi-mcp -r), thin over cubbi_tools.service.Service as the others are."""

from bottle import request, response


def install(app, api, body, service):
    """Add the /mcp routes to APP; API is make_app's JSON route decorator,
    BODY its bounded JSON body reader."""

    @app.get("/mcp")
    @api()
    def list_mcp(user):
        return {"servers": service.mcp(user).all_servers()}

    @app.post("/mcp")
    @api()
    def add_mcp(user):
        rec = service.mcp_add(user, body())
        response.status = 201
        return rec

    @app.get("/mcp/<name>")
    @api()
    def get_mcp(user, name):
        return service.mcp(user).get(name)

    @app.delete("/mcp/<name>")
    @api()
    def delete_mcp(user, name):
        return service.mcp(user).remove(name)

    @app.post("/mcp/<name>/<action>")
    @api()
    def act_mcp(user, name, action):
        return service.mcp_action(user, name, action)

    @app.get("/mcp/<name>/logs")
    @api()
    def mcp_logs(user, name):
        tail = request.query.get("tail")
        return {"lines": service.mcp_logs(user, name, tail=int(tail) if (tail or "").isdigit()
                                          else None, proxy=request.query.get("proxy") == "1")}
