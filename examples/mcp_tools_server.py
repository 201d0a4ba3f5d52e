"""A small support desk as an MCP server (the MCP Python SDK's `MCPServer`), with no governance of its own:
the demo (examples/demo.py, step 6) and docs/mcp.md put `aegis-mcp proxy` in front of it.

    python examples/mcp_tools_server.py                      # MCP over stdio (what the proxy starts)
    aegis-mcp proxy --actor support-bot-mcp -- python examples/mcp_tools_server.py

Its four tools meet the four outcomes of examples/mcp_policies.yaml: `lookup_order` is allowed, `refund` is
allowed up to 100 and needs the user's confirmation above, `delete_customer` is denied, `export_customers`
waits for an operator. Each tool prints nothing (stdout is the MCP channel); it only answers.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

ORDERS = {
    "A-1001": {"customer": "C-42", "total": 89.90, "currency": "EUR", "status": "delivered"},
    "A-1002": {"customer": "C-42", "total": 640.00, "currency": "EUR", "status": "delivered"},
}

server = MCPServer("support-desk", instructions="The support desk's orders and customers.")


@server.tool()
def lookup_order(order_id: str) -> dict[str, object]:
    """Look up an order of the support desk."""
    order = ORDERS.get(order_id)
    if order is None:
        raise ValueError(f"no order {order_id}")
    return {"order_id": order_id, **order}


@server.tool()
def refund(order_id: str, amount: float) -> str:
    """Refund (part of) an order to the customer's card."""
    if order_id not in ORDERS:
        raise ValueError(f"no order {order_id}")
    return f"refunded {amount:.2f} EUR on {order_id}"


@server.tool()
def delete_customer(customer_id: str) -> str:
    """Delete a customer and all their data."""
    return f"deleted {customer_id}"


@server.tool()
def export_customers(segment: str) -> str:
    """Export the customer list of a segment as CSV."""
    return f"exported 1,284 customers of segment {segment!r} to exports/{segment}.csv"


if __name__ == "__main__":
    server.run("stdio")
