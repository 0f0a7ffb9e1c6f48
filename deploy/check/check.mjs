// Offline check of the Kubernetes manifests under deploy/k8s (no API server is reachable):
//   node deploy/check/check.mjs KVSPAN_BINARY
// 1. Every YAML document parses and validates against its API schema (kubernetes-models;
//    note it does not flag unknown fields). An apiVersion/kind it does not know fails.
// 2. Every container's command line, with $(VAR) expanded from its env and the ConfigMaps
//    of the same layout (directory), is run through `KVSPAN_BINARY <role> ... --check-flags`,
//    so a renamed or mistyped flag fails.
// 3. The gRPC probes point at the --listen port, and terminationGracePeriodSeconds covers
//    --grace-ms plus a 5 s margin.
// Self-tests first show that each kind of check can fail. Prints one `ok:` line per check
// and `deploy check: ... all checks passed` last; exits 1 on any failure.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const kRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "k8s");
const kGraceMarginMs = 5000;
const kWorkloadKinds = new Set(["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"]);

const binary = process.argv[2];
if (!binary) {
  console.error("usage: node check.mjs KVSPAN_BINARY");
  process.exit(2);
}
const failures = [];
const fail = (message) => {
  failures.push(message);
  console.log(`FAIL: ${message}`);
};

// Validates one object against its schema. Returns null when valid, else the error message.
async function SchemaError(object) {
  if (!object || typeof object.apiVersion !== "string" || typeof object.kind !== "string") {
    return "no apiVersion/kind";
  }
  let module;
  try {
    module = await import(`kubernetes-models/${object.apiVersion}`);
  } catch {
    return `unknown apiVersion ${object.apiVersion}`;
  }
  const Model = module[object.kind];
  if (typeof Model !== "function") return `unknown kind ${object.apiVersion} ${object.kind}`;
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
}

// Runs `binary ...argv --check-flags`: [exit code, output].
function CheckFlags(argv) {
  try {
    const out = execFileSync(binary, [...argv, "--check-flags"], { encoding: "utf8", stdio: "pipe" });
    return [0, out];
  } catch (error) {
    return [error.status ?? -1, `${error.stdout ?? ""}${error.stderr ?? ""}`];
  }
}

// The value of `--name` in argv (either `--name value` or `--name=value`), or undefined.
function FlagValue(argv, name) {
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === `--${name}` && i + 1 < argv.length) return argv[i + 1];
    if (argv[i].startsWith(`--${name}=`)) return argv[i].slice(name.length + 3);
  }
  return undefined;
}

// Kubernetes' $(VAR) expansion of command and args ($$ escapes); unresolved names are errors.
function Expand(text, env, missing) {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (match, name) => {
    if (match === "$$") return "$";
    if (!(name in env)) missing.push(name);
    return env[name] ?? match;
  });
}

// The container's environment: envFrom ConfigMaps, then env (values and configMapKeyRefs).
function ContainerEnv(container, configMaps, where) {
  const env = {};
  for (const source of container.envFrom ?? []) {
    const name = source.configMapRef?.name;
    if (!name) continue;
    if (!configMaps.has(name)) fail(`${where}: envFrom ConfigMap ${name} is not in this layout`);
    Object.assign(env, configMaps.get(name) ?? {});
  }
  for (const variable of container.env ?? []) {
    const ref = variable.valueFrom?.configMapKeyRef;
    if (ref) {
      const value = configMaps.get(ref.name)?.[ref.key];
      if (value === undefined) fail(`${where}: env ${variable.name}: ConfigMap key ${ref.name}/${ref.key} not found`);
      env[variable.name] = value;
    } else if (variable.value !== undefined) {
      env[variable.name] = variable.value;
    }
  }
  return env;
}

// Checks one container of a workload: its command line against the binary, probes, grace.
function CheckContainer(container, podSpec, configMaps, where) {
  const env = ContainerEnv(container, configMaps, where);
  const missing = [];
  let argv = (container.args ?? []).map((a) => Expand(String(a), env, missing));
  if (container.command) {
    const command = container.command.map((c) => Expand(String(c), env, missing));
    if (!/(^|\/)kvspan$/.test(command[0])) {
      fail(`${where}: command ${command[0]} is not kvspan (the image's entrypoint)`);
      return 0;
    }
    argv = [...command.slice(1), ...argv];
  }
  if (missing.length > 0) fail(`${where}: unresolved $(${missing.join("), $(")})`);
  const [code, output] = CheckFlags(argv);
  if (code !== 0 || !output.includes("flags ok")) {
    fail(`${where}: kvspan ${argv.join(" ")} --check-flags exited ${code}: ${output.trim()}`);
  } else {
    console.log(`ok: ${where}: kvspan ${argv[0]} accepts its ${argv.length - 1} arguments`);
  }
  const port = Number((FlagValue(argv, "listen") ?? "").split(":").pop());
  for (const kind of ["livenessProbe", "readinessProbe"]) {
    const probe = container[kind];
    if (!probe?.grpc) fail(`${where}: ${kind} is not a gRPC probe`);
    else if (probe.grpc.port !== port) fail(`${where}: ${kind} on port ${probe.grpc.port}, --listen on ${port}`);
  }
  const grace = FlagValue(argv, "grace-ms");
  if (grace !== undefined) {
    const periodMs = (podSpec.terminationGracePeriodSeconds ?? 30) * 1000;
    if (periodMs < Number(grace) + kGraceMarginMs) {
      fail(`${where}: terminationGracePeriodSeconds ${periodMs / 1000} < --grace-ms ${grace} + ${kGraceMarginMs} ms`);
    }
  }
  if (!container.resources?.requests || !container.resources?.limits) fail(`${where}: no resource requests and limits`);
  return 1;
}

function YamlFiles(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? YamlFiles(join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : []))
    .sort();
}

// --- self-tests: each check can fail ---
const broken = {
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name: "broken" },
  spec: {
    replicas: "two",
    selector: { matchLabels: { app: "x" } },
    template: { metadata: { labels: { app: "x" } }, spec: { containers: [{ name: "x", image: "x" }] } },
  },
};
const brokenError = await SchemaError(broken);
if (brokenError === null) fail("self-test: a Deployment whose replicas is a string validated");
else console.log(`ok: self-test: broken Deployment rejected (${brokenError})`);
if ((await SchemaError({ apiVersion: "apps/v1", kind: "StatefulSett", metadata: { name: "x" } })) === null) {
  fail("self-test: an unknown kind validated");
} else {
  console.log("ok: self-test: unknown kind rejected");
}
{
  const [code] = CheckFlags(["serve", "--listen", "0.0.0.0:7400", "--no-such-flag", "1"]);
  if (code !== 2) fail(`self-test: kvspan serve --no-such-flag --check-flags exited ${code}, not 2`);
  else console.log("ok: self-test: kvspan serve rejects an unknown flag (exit 2)");
}

// --- the manifests, one layout (directory) at a time ---
const files = YamlFiles(kRoot);
const byDir = new Map();
let numObjects = 0;
let numCommands = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      fail(`${relative(kRoot, file)}: YAML: ${doc.errors[0].message}`);
      continue;
    }
    const object = doc.toJS();
    if (object === null) continue;
    const where = `${relative(kRoot, file)}: ${object.kind} ${object.metadata?.name}`;
    const error = await SchemaError(object);
    if (error !== null) fail(`${where}: ${error}`);
    else console.log(`ok: ${where}: valid`);
    ++numObjects;
    if (!byDir.has(dirname(file))) byDir.set(dirname(file), []);
    byDir.get(dirname(file)).push({ object, where });
  }
}
for (const objects of byDir.values()) {
  const configMaps = new Map(
    objects.filter(({ object }) => object.kind === "ConfigMap").map(({ object }) => [object.metadata.name, object.data ?? {}]),
  );
  for (const { object, where } of objects) {
    if (!kWorkloadKinds.has(object.kind)) continue;
    const podSpec = object.kind === "Pod" ? object.spec : object.spec?.template?.spec;
    for (const container of [...(podSpec?.initContainers ?? []), ...(podSpec?.containers ?? [])]) {
      numCommands += CheckContainer(container, podSpec, configMaps, `${where}/${container.name}`);
    }
  }
}

if (numObjects === 0) fail(`no manifests under ${kRoot}`);
if (failures.length > 0) {
  console.log(`deploy check: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log(
  `deploy check: ${numObjects} objects in ${files.length} files valid, ${numCommands} command lines accepted by kvspan; all checks passed`,
);
