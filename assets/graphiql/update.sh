#!/usr/bin/env bash
# Refreshes the vendored GraphiQL files from the versions pinned in
# package.json / package-lock.json. To upgrade: edit the versions in
# package.json, run `npm install --ignore-scripts --save-exact` here (which
# rewrites package-lock.json with the new integrity hashes), then this script;
# commit everything but node_modules. Without changes to the pins it
# reproduces the committed files byte for byte (`git status` stays clean).
set -euo pipefail
cd "$(dirname "$0")"

npm ci --ignore-scripts --no-audit --no-fund

cp node_modules/graphiql/graphiql.min.js       graphiql.min.js
cp node_modules/graphiql/graphiql.min.css      graphiql.min.css
cp node_modules/graphiql/LICENSE               LICENSE.graphiql
cp node_modules/react/umd/react.production.min.js         react.production.min.js
cp node_modules/react/LICENSE                  LICENSE.react
cp node_modules/react-dom/umd/react-dom.production.min.js react-dom.production.min.js
cp node_modules/react-dom/LICENSE              LICENSE.react-dom

# The GraphiQL bundle carries its dependencies (graphql, CodeMirror, Radix, …):
# every package the lock file installs, with its licence text when it ships one.
node - <<'JS' > THIRD-PARTY-LICENSES.txt
const fs = require('fs');
const path = require('path');
const lock = require('./package-lock.json');
const out = ['Packages installed by package-lock.json, whose code the vendored bundles may contain.\n'];
for (const [dir, pkg] of Object.entries(lock.packages).sort()) {
  if (!dir) continue;
  const name = dir.replace(/^.*node_modules\//, '');
  out.push('='.repeat(78), `${name}@${pkg.version}  (${pkg.license || 'licence not stated'})`, '='.repeat(78));
  const file = fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  out.push(file ? fs.readFileSync(path.join(dir, file), 'utf8').trim() : '(no licence file in the package)', '');
}
process.stdout.write(out.join('\n') + '\n');
JS

sha256sum graphiql.min.js graphiql.min.css react.production.min.js react-dom.production.min.js
