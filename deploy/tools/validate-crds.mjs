// Validates rendered custom resources that kubernetes-validate has no schema
// for (check.sh calls it with JSON files, one object each). Schemas come from
// @kubernetes-models, generated from the projects' own CRDs.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor };

let failed = 0;
for (const file of process.argv.slice(2)) {
  const object = JSON.parse(readFileSync(file, "utf8"));
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = models[`${object.apiVersion}/${object.kind}`];
  if (!Model) {
    console.log(`FAIL ${name}: no schema for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`INFO ${name} passed against ${object.apiVersion}`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
