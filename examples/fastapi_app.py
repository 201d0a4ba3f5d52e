"""A governed FastAPI app: refunds and SQL queries run only when AEGIS allows them.

Run it against a local platform (`make serve` prints a development key on first start):

    export AEGIS_ENDPOINT=http://127.0.0.1:8000 AEGIS_API_KEY=aegis_sk_...
    python3 -m uv run uvicorn --factory examples.fastapi_app:create_app --port 8080

then, as the support bot (a stand-in for your real auth; see TOKENS):

    curl -s -X POST localhost:8080/orders/A-17/refunds -H 'Authorization: Bearer bot-token' \
         -H 'Content-Type: application/json' -d '{"amount": 40, "currency": "EUR"}'       # 200: ALLOW
    curl -si -X POST localhost:8080/orders/A-18/refunds -H 'Authorization: Bearer bot-token' \
         -H 'Content-Type: application/json' -d '{"amount": 250, "currency": "EUR"}'      # 428: confirm
    # ...the user consents; repeat the same request with the decision id from the 428:
    curl -s -X POST localhost:8080/orders/A-18/refunds -H 'Authorization: Bearer bot-token' \
         -H 'AEGIS-Confirmation: dec_...' -H 'Content-Type: application/json' \
         -d '{"amount": 250, "currency": "EUR"}'                                          # 200: ALLOW
    curl -si -X POST localhost:8080/orders/A-19/refunds -H 'Authorization: Bearer bot-token' \
         -H 'Content-Type: application/json' -d '{"amount": 3000, "currency": "EUR"}'     # 403: review
    # ...the answer links to the decision's status (Link: <...>; rel="status"); wait there for the review:
    curl -s 'localhost:8080/aegis/decisions/dec_...?wait=30' -H 'Authorization: Bearer bot-token'
    # ...once it says "next_step": "repeat", send the same request again with AEGIS-Confirmation: dec_...

The API key needs the scopes `governance:propose` and `governance:read`.
"""

import os
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from aegis_fastapi import Aegis, Decision
from aegis_sdk import Actor, AsyncAegisClient

# The app's own authentication. A real app verifies a session or a JWT here; the point is that the
# actor comes from the app's auth, never from a header the caller could set to anything.
TOKENS = {
    "bot-token": Actor(id="support-bot", type="ai-agent"),
    "alice-token": Actor(id="alice", type="human"),
}


def current_actor(authorization: Annotated[str | None, Header()] = None) -> Actor:
    scheme, _, token = (authorization or "").partition(" ")
    actor = TOKENS.get(token) if scheme.lower() == "bearer" else None
    if actor is None:
        raise HTTPException(401, "Send 'Authorization: Bearer <token>' with a known token.")
    return actor


class RefundRequest(BaseModel):
    amount: float = Field(gt=0)
    currency: Literal["EUR", "USD", "GBP"]
    note: str | None = Field(default=None, max_length=500)


class QueryRequest(BaseModel):
    query: str = Field(min_length=1)
    database: Literal["development", "staging", "production"] = "production"


def create_app(
    aegis_endpoint: str | None = None,
    api_key: str | None = None,
    *,
    client: AsyncAegisClient | None = None,
    fail_open: bool = False,
) -> FastAPI:
    """The app. `aegis_endpoint` / `api_key` default to AEGIS_ENDPOINT / AEGIS_API_KEY; pass `client` to
    use a client you manage (tests: `FakePlatform().async_client()` or `InProcessServer.async_client()`)."""
    aegis = Aegis(
        actor=current_actor,
        client=client,
        endpoint=aegis_endpoint or os.environ.get("AEGIS_ENDPOINT", "http://127.0.0.1:8000"),
        api_key=api_key,
        retries=1,
        timeout=10.0,
        fail_open=fail_open,
    )
    app = aegis.install(FastAPI(title="Governed support desk"))
    app.state.aegis = aegis
    # GET /aegis/decisions/{decision_id}: a caller waiting on a review polls it (its own decisions only).
    app.include_router(aegis.status_router(prefix="/aegis"))

    Refund = Annotated[Decision, Depends(aegis.require("payments.refund"))]
    Query = Annotated[Decision, Depends(aegis.require("database.query"))]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, body: RefundRequest, decision: Refund) -> dict[str, object]:
        # Governance saw {"order_id", "amount", "currency"(, "note")}: path + validated body.
        limit = decision.constraints.get("max_amount")
        return {
            "refunded": body.amount,
            "currency": body.currency,
            "order_id": order_id,
            "limit": limit,
            "decision_id": decision.decision_id,
            "confirmed_from": decision.parent_decision_id,
        }

    @app.post("/queries")
    def run_query(body: QueryRequest, decision: Query) -> dict[str, object]:
        # A plain `def` endpoint works the same way (FastAPI runs it in a thread).
        max_rows = decision.constraints.get("max_rows")
        return {"ran": body.query, "database": body.database, "max_rows": max_rows}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
