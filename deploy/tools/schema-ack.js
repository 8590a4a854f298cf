// graphql-inspector `diff --onComplete` handler (check.sh passes it): fails on
// a breaking change unless deploy/schema-breaking-changes.ack lists it.
//
// An acknowledgement is one line, `<CHANGE_TYPE> <path>: <reason>`, e.g.
//   FIELD_REMOVED Session.reason: deprecated in v0.3.0 (2026-09-01), removed in v0.5.0
// The reason is required. check.sh prints the exact line for each change it
// refuses; lines matching nothing are reported and ignored.
const { readFileSync } = require("node:fs");

function changeKey(change) {
  return `${change.type} ${change.path ?? change.message}`;
}

function readAcks(file) {
  const acks = new Map();
  const lines = readFileSync(file, "utf8").split("\n");
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const match = /^(\S+) (.+?): (.*\S.*)$/.exec(line);
    if (!match) {
      console.log(`${file}:${index + 1}: expected "<CHANGE_TYPE> <path>: <reason>", got "${line}"`);
      process.exit(1);
    }
    acks.set(`${match[1]} ${match[2]}`, match[3]);
  });
  return acks;
}

module.exports = function onComplete({ breakingChanges }) {
  const file = process.env.SCHEMA_ACK_FILE;
  const acks = readAcks(file);
  const refused = [];
  for (const change of breakingChanges) {
    const key = changeKey(change);
    if (acks.has(key)) {
      console.log(`acknowledged: ${key} (${acks.get(key)})`);
      acks.delete(key);
    } else {
      refused.push(key);
    }
  }
  for (const key of acks.keys()) {
    console.log(`note: ${file} acknowledges "${key}", which this diff does not contain`);
  }
  if (refused.length) {
    console.log(
      `\n${refused.length} breaking change(s) not acknowledged. Deprecate first ` +
        `(deploy/README.md, "Schema evolution"); if the break is intended, ` +
        `add to ${file}:`,
    );
    for (const key of refused) console.log(`  ${key}: <why, and since when it was deprecated>`);
    process.exit(1);
  }
  console.log("schema: no unacknowledged breaking change");
};
