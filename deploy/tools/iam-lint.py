"""Run parliament on every IAM document in deploy/iam/ (check.sh calls this).

Identity policies (`*-policy.json`) go to parliament as they are. Trust
policies (`*trust*.json`) have no Resource element, which parliament reports
as malformed before it checks anything else; so each is analysed with the
role it is attached to as its Resource, and parliament still checks the
rest (effect, actions, principals, condition keys for the action).

Any finding fails the run.
"""

import json
import pathlib
import sys

import parliament

# The role each trust policy is attached to (any role ARN will do: the
# Resource only lets parliament reach its other checks).
TRUSTED_ROLE = "arn:aws:iam::111111111111:role/ssm-session-gateway-reader"


def check(path: pathlib.Path) -> int:
    text = path.read_text()
    if "trust" in path.name:
        doc = json.loads(text)
        for statement in doc["Statement"]:
            statement.setdefault("Resource", TRUSTED_ROLE)
        text = json.dumps(doc, indent=2)
    policy = parliament.analyze_policy_string(text, filepath=str(path))
    failed = 0
    for finding in policy.findings:
        failed += 1
        print(f"  {path.name}: {finding.issue} "
              f"{finding.title}: {finding.detail} {finding.location}")
    return failed


def main() -> int:
    directory = pathlib.Path(sys.argv[1])
    files = sorted(directory.glob("*.json"))
    if not files:
        print(f"no IAM documents in {directory}")
        return 1
    failed = sum(check(f) for f in files)
    print(f"parliament: {len(files)} documents, {failed} findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
