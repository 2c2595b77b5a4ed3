// Validates Backstage catalog entities (a JSON list on stdin) with Backstage's own
// @backstage/catalog-model: the entity envelope and metadata policies, then the kind's
// validator (API, Component). Prints a JSON list: one list of errors per entity.
"use strict";
const model = require("@backstage/catalog-model");

const policies = model.EntityPolicies.allOf([
  new model.SchemaValidEntityPolicy(),
  new model.DefaultNamespaceEntityPolicy(),
  new model.NoForeignRootFieldsEntityPolicy(),
  new model.FieldFormatEntityPolicy(),
]);
const kinds = {
  API: model.apiEntityV1alpha1Validator,
  Component: model.componentEntityV1alpha1Validator,
};

async function check(entity) {
  try {
    await policies.enforce(entity);
    const validator = kinds[entity.kind];
    if (!validator) return [`no validator for kind ${entity.kind}`];
    if (!(await validator.check(entity))) return [`not a ${entity.kind} entity`];
    return [];
  } catch (error) {
    return [String(error && error.message ? error.message : error)];
  }
}

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  const entities = JSON.parse(input);
  const results = [];
  for (const entity of entities) results.push(await check(entity));
  process.stdout.write(JSON.stringify(results));
});
