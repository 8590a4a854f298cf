#!/usr/bin/env python3
"""The benchmark's small client: one keep-alive connection, one request at a
time, so a run under callgrind costs the same instructions every time.

  client.py cursors URL KEY N OUT     write N real History cursors, one a line
  client.py run URL KEY ROW N [CURSORS]  send N requests of one row, check them

ROW is one of the rows of bench/run.sh: prebuilt, hit, doc-miss, cursor-miss,
apq-miss. Every request must answer 200; the misses must say `X-Cache: MISS`
and the hit `X-Cache: HIT`, or the run fails (exit 1) saying how many did
not. Standard library only.
"""

import hashlib
import http.client
import json
import sys
import urllib.parse

# The warm query of the benchmark: sessions(first: 50), every scalar field.
FIELDS = ("id sessionId target status startDate endDate documentName owner ownerName "
          "reason details maxSessionDuration accessType durationSeconds region")
SELECTION = "edges { cursor node { %s } } pageInfo { hasNextPage endCursor }" % FIELDS
QUERY = "{ sessions(state: HISTORY, first: 50) { %s } }" % SELECTION
# The paging document: the same page, after a cursor.
PAGE_QUERY = ("query Page($after: String) { sessions(state: HISTORY, first: 50, after: $after) "
              "{ %s } }" % SELECTION)
PAGE_HASH = hashlib.sha256(PAGE_QUERY.encode()).hexdigest()


def doc_miss_query(tag):
    """The warm query under an alias no earlier request used."""
    return "{ %s: sessions(state: HISTORY, first: 50) { %s } }" % (tag, SELECTION)


class Conn:
    def __init__(self, url, key):
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        self.headers = {"content-type": "application/json", "authorization": "Bearer " + key}

    def post(self, path, body):
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, response.getheader("x-cache"), data


def collect_cursors(url, key, n, out):
    """Walks History with the paging document's arguments and keeps every
    edge's cursor that still has 50 sessions after it."""
    conn = Conn(url, key)
    cursors, after = [], None
    query = ("query($after: String) { sessions(state: HISTORY, first: 1000, after: $after) "
             "{ edges { cursor } pageInfo { hasNextPage endCursor } } }")
    while True:
        status, _, data = conn.post("/graphql", {"query": query, "variables": {"after": after}})
        body = json.loads(data)
        if status != 200 or body.get("errors"):
            sys.exit(f"collecting cursors failed: {status} {data[:300]!r}")
        page = body["data"]["sessions"]
        cursors.extend(e["cursor"] for e in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    usable = cursors[:-50] if len(cursors) > 50 else []
    if len(usable) < n:
        sys.exit(f"only {len(usable)} cursors with 50 sessions after them; {n} wanted")
    with open(out, "w") as f:
        f.write("\n".join(usable[:n]) + "\n")


def body_of(row, i, cursors, nonce):
    if row in ("prebuilt", "hit"):
        return {"query": QUERY}
    if row == "doc-miss":
        return {"query": doc_miss_query(f"s{nonce}_{i}")}
    if row == "cursor-miss":
        return {"query": PAGE_QUERY, "variables": {"after": cursors[i]}}
    if row == "apq-miss":
        return {"variables": {"after": cursors[i]},
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": PAGE_HASH}}}
    sys.exit(f"unknown row {row}")


def run(url, key, row, n, cursor_file=None):
    cursors = open(cursor_file).read().split() if cursor_file else []
    if row in ("cursor-miss", "apq-miss") and len(cursors) < n:
        sys.exit(f"{row}: {n} requests need {n} cursors, {len(cursors)} given")
    conn = Conn(url, key)
    path = "/_bench/prebuilt" if row == "prebuilt" else "/graphql"
    want = {"hit": "HIT", "prebuilt": None}.get(row, "MISS")
    nonce = hashlib.sha256(f"{row}{n}{cursor_file}".encode()).hexdigest()[:8]
    wrong = 0
    for i in range(n):
        status, cache, data = conn.post(path, body_of(row, i, cursors, nonce))
        if status != 200 or cache != want or (row != "prebuilt" and b'"errors"' in data):
            wrong += 1
            if wrong == 1:
                print(f"{row}: request {i}: {status} X-Cache {cache}: {data[:300]!r}",
                      file=sys.stderr)
    if wrong:
        sys.exit(f"{row}: {wrong} of {n} requests were not as expected")


def main(argv):
    if len(argv) >= 5 and argv[0] == "cursors":
        collect_cursors(argv[1], argv[2], int(argv[3]), argv[4])
    elif len(argv) >= 4 and argv[0] == "run":
        run(argv[1], argv[2], argv[3], int(argv[4]), argv[5] if len(argv) > 5 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
