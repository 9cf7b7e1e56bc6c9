"""A real xAPI client against Leerspoor: PyPI's `tincan` (TinCanPython) stores a statement,
reads it back, queries it, and keeps and reads State, as an e-learning tool would.

Usage: python tincan_check.py ENDPOINT KEY SECRET   (ENDPOINT like http://127.0.0.1:8080/xapi/)
Exits 0 when everything round-trips, 1 with the failed step otherwise.
"""

import sys
import uuid

from tincan import (
    Activity,
    ActivityDefinition,
    Agent,
    LanguageMap,
    RemoteLRS,
    StateDocument,
    Statement,
    Verb,
)


def check(step, response):
    if not response.success:
        print(f"FAILED {step}: HTTP {response.response.status} {response.data!r}")
        sys.exit(1)
    return response


def main():
    endpoint, key, secret = sys.argv[1:4]
    lrs = RemoteLRS(endpoint=endpoint, username=key, password=secret)
    # lrs.about() is left out: tincan 1.0.0 refuses any version it does not know, and
    # Leerspoor's /xapi/about rightly lists 2.0.0 next to 1.0.3.

    actor = Agent(name="Ann Tincan", mbox=f"mailto:ann-{uuid.uuid4()}@example.org")
    activity = Activity(
        id="https://hub.example/courses/cnc-basics",
        definition=ActivityDefinition(name=LanguageMap({"en-US": "CNC basics"})),
    )
    statement = Statement(
        actor=actor,
        verb=Verb(id="http://adlnet.gov/expapi/verbs/completed", display=LanguageMap({"en-US": "completed"})),
        object=activity,
    )
    saved = check("save_statement", lrs.save_statement(statement)).content
    read = check("retrieve_statement", lrs.retrieve_statement(saved.id)).content
    if read.id != saved.id or read.actor.mbox != actor.mbox:
        print(f"FAILED retrieve_statement: got {read.to_json()}")
        sys.exit(1)

    found = check("query_statements", lrs.query_statements({"agent": actor, "limit": 10})).content
    if [s.id for s in found.statements] != [saved.id]:
        print(f"FAILED query_statements: got {[s.id for s in found.statements]}")
        sys.exit(1)

    state_id = "bookmark"

    document = StateDocument(id=state_id, activity=activity, agent=actor, content='{"page": 7}', content_type="application/json")
    check("save_state", lrs.save_state(document))
    state = check("retrieve_state", lrs.retrieve_state(activity=activity, agent=actor, state_id=state_id)).content
    content = state.content.decode() if isinstance(state.content, (bytes, bytearray)) else str(state.content)
    if '"page": 7' not in content.replace('"page":7', '"page": 7'):
        print(f"FAILED retrieve_state: got {content!r}")
        sys.exit(1)
    ids = check("retrieve_state_ids", lrs.retrieve_state_ids(activity=activity, agent=actor)).content
    if state_id not in ids:
        print(f"FAILED retrieve_state_ids: got {ids!r}")
        sys.exit(1)
    check("delete_state", lrs.delete_state(document))
    print("tincan client: statements and state round-trip")


if __name__ == "__main__":
    main()
