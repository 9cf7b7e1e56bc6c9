#!/usr/bin/env python3
"""Mixed load against a running Leerspoor, for deploy/soak.sh (not part of CI).

load:   writers post batches and single statements (with their own ids, retried with the same
        body until answered, as a careful client would), readers query statements, documents
        are merged and read, summaries are listed. Every acknowledged statement id is
        written to OUT/acknowledged.json, every answer counted by status.
verify: every acknowledged id is stored exactly once, and the hub summaries equal a recount
        of the stored statements.

Standard library only.
"""

import argparse
import base64
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter

HUB = "https://w3id.org/xapi/llo/extensions/hub"
HUBS = ["eindhoven", "delft", "twente", "groningen"]
VERBS = ["attended", "completed", "passed", "failed"]


class Client:
    def __init__(self, base, user, password):
        self.base = base.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "X-Experience-API-Version": "2.0.0"}

    def call(self, method, path, body=None, content_type="application/json", timeout=30):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, OSError):
            return 0, b""


def statement(n):
    return {
        "id": str(uuid.uuid4()),
        "actor": {"objectType": "Agent", "mbox": f"mailto:worker{n % 5000}@example.org"},
        "verb": {"id": f"http://adlnet.gov/expapi/verbs/{random.choice(VERBS)}"},
        "object": {"id": f"https://hub.example/sessions/{n % 300}"},
        "result": {"duration": f"PT{random.randint(1, 7200)}S"},
        "context": {"extensions": {HUB: HUBS[n % len(HUBS)]}},
    }


class Load:
    def __init__(self, client, deadline):
        self.client = client
        self.deadline = deadline
        self.lock = threading.Lock()
        self.acknowledged = []
        self.statuses = Counter()
        self.counter = 0

    def count(self, kind, status):
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1

    def next_n(self, size):
        with self.lock:
            start = self.counter
            self.counter += size
            return start

    def until_answered(self, kind, method, path, body, ok):
        """Sends the same request until the LRS gives a final answer (retrying is safe)."""
        while True:
            status, _ = self.client.call(method, path, body)
            self.count(kind, status)
            if status in ok:
                return True
            if status in (0, 429, 503):
                time.sleep(0.5)
                continue
            return False

    def writer(self):
        while time.time() < self.deadline:
            if random.random() < 0.8:
                start = self.next_n(20)
                batch = [statement(start + i) for i in range(20)]
                if self.until_answered("post", "POST", "/xapi/statements", batch, (200,)):
                    with self.lock:
                        self.acknowledged.extend(s["id"] for s in batch)
            else:
                one = statement(self.next_n(1))
                path = "/xapi/statements?statementId=" + one["id"]
                if self.until_answered("put", "PUT", path, one, (204,)):
                    with self.lock:
                        self.acknowledged.append(one["id"])

    def reader(self):
        while time.time() < self.deadline:
            n = random.randint(0, 5000)
            query = random.choice([
                {"agent": json.dumps({"mbox": f"mailto:worker{n}@example.org"})},
                {"verb": f"http://adlnet.gov/expapi/verbs/{random.choice(VERBS)}", "limit": "50"},
                {"activity": f"https://hub.example/sessions/{n % 300}"},
                {"limit": "100"},
            ])
            status, _ = self.client.call("GET", "/xapi/statements?" + urllib.parse.urlencode(query))
            self.count("get", status)
            time.sleep(0.05)

    def documents(self):
        while time.time() < self.deadline:
            n = random.randint(0, 50)
            path = "/xapi/activities/state?" + urllib.parse.urlencode({
                "activityId": f"https://hub.example/sessions/{n}",
                "agent": json.dumps({"mbox": f"mailto:worker{n}@example.org"}),
                "stateId": "progress",
            })
            status, _ = self.client.call("POST", path, {f"k{random.randint(0, 20)}": n})
            self.count("state-post", status)
            status, _ = self.client.call("GET", path)
            self.count("state-get", status)
            time.sleep(0.05)

    def summaries(self):
        while time.time() < self.deadline:
            for path in ["/summaries/hubs", "/summaries/workers?sort=statements&order=desc&limit=20",
                         f"/summaries/hubs/{random.choice(HUBS)}"]:
                status, _ = self.client.call("GET", path)
                self.count("summary", status)
            time.sleep(0.2)


def load(args):
    client = Client(args.base, args.user, args.password)
    run = Load(client, time.time() + args.minutes * 60)
    threads = [threading.Thread(target=run.writer) for _ in range(4)]
    threads += [threading.Thread(target=run.reader), threading.Thread(target=run.documents),
                threading.Thread(target=run.summaries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(f"{args.out}/acknowledged.json", "w") as file:
        json.dump(run.acknowledged, file)
    with open(f"{args.out}/statuses.json", "w") as file:
        json.dump(dict(run.statuses), file, indent=1, sort_keys=True)
    print(f"soak: {len(run.acknowledged)} statements acknowledged; answers: {dict(run.statuses)}")


def verify(args):
    client = Client(args.base, args.user, args.password)
    with open(f"{args.out}/acknowledged.json") as file:
        acknowledged = json.load(file)
    stored = []
    path = "/xapi/statements?limit=100"
    while path:
        status, body = client.call("GET", path)
        if status != 200:
            raise SystemExit(f"soak: listing failed with {status}")
        page = json.loads(body)
        stored.extend(page["statements"])
        path = page.get("more") or ""
    ids = Counter(s["id"] for s in stored)
    missing = [i for i in acknowledged if i not in ids]
    doubled = [i for i, count in ids.items() if count > 1]
    per_hub = Counter(s.get("context", {}).get("extensions", {}).get(HUB) for s in stored)
    # The projector may still be applying the last writes: a minute to agree.
    deadline = time.time() + 60
    while True:
        mismatched = []
        for hub in HUBS:
            status, body = client.call("GET", f"/summaries/hubs/{hub}")
            served = json.loads(body)["statements"] if status == 200 else 0
            if served != per_hub[hub]:
                mismatched.append((hub, served, per_hub[hub]))
        if not mismatched or time.time() > deadline:
            break
        time.sleep(1)
    print(f"soak: acknowledged {len(acknowledged)}, stored {len(stored)}, missing {len(missing)}, "
          f"stored twice {len(doubled)}, hub summaries off {mismatched}")
    if missing or doubled or mismatched:
        raise SystemExit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["load", "verify"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--user", default="leerspoor")
    parser.add_argument("--password", default="leerspoor")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    load(args) if args.mode == "load" else verify(args)


if __name__ == "__main__":
    main()
