// Offline check of the Kubernetes manifests under deploy/k8s (no API server is reachable):
//   node deploy/check/check.mjs KVSPAN_BINARY
// 1. Every YAML document parses and validates against its API schema (kubernetes-models;
//    note it does not flag unknown fields). An apiVersion/kind it does not know fails.
// 2. Every container's command line, with $(VAR) expanded from its env and the ConfigMaps
//    of the same layout (directory), is run through `KVSPAN_BINARY <role> ... --check-flags`,
//    so a renamed or mistyped flag fails.
// 3. The gRPC probes point at the --listen port, and terminationGracePeriodSeconds covers
//    --grace-ms plus a 5 s margin.
// 4. The roles reach each other (wiring.mjs): every --store, --prefill and --decode address
//    names a Service of the layout that selects pods of that role on their --listen port
//    (headless for --prefill and --decode), every prefill and decode workload is found by a
//    frontend of its layout, a frontend has --decode, and --span-tokens is equal on every role.
// A directory sees its own objects and its parent directories' (a subfolder such as
// disaggregated/gpu/ is applied on top of its parent); a layout is a directory of deploy/k8s.
// Self-tests first show that each kind of check can fail. Prints one `ok:` line per check
// and `deploy check: ... all checks passed` last; exits 1 on any failure.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { FlagValue, ResolveAddress, ResolveAddresses, SpanTokenProblems } from "./wiring.mjs";

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
// Returns its command (wiring.mjs), or null when it does not run kvspan.
function CheckContainer(container, workload, podSpec, configMaps, where) {
  const env = ContainerEnv(container, configMaps, where);
  const missing = [];
  let argv = (container.args ?? []).map((a) => Expand(String(a), env, missing));
  if (container.command) {
    const command = container.command.map((c) => Expand(String(c), env, missing));
    if (!/(^|\/)kvspan$/.test(command[0])) {
      fail(`${where}: command ${command[0]} is not kvspan (the image's entrypoint)`);
      return null;
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
  const labels = workload.kind === "Pod" ? workload.metadata?.labels : workload.spec?.template?.metadata?.labels;
  return { where, role: argv[0], argv, listenPort: port, labels: labels ?? {}, ports: container.ports ?? [], workload };
}

// `dir` and its parent directories up to deploy/k8s.
function ScopeDirs(dir) {
  const dirs = [dir];
  while (relative(kRoot, dirs.at(-1)) !== "") dirs.push(dirname(dirs.at(-1)));
  return dirs;
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

{
  // A frontend against a decode workload whose Service is not headless, a misspelled
  // Service, a wrong port, and two roles with different --span-tokens.
  const labels = { "app.kubernetes.io/name": "d" };
  const workload = { kind: "Deployment", metadata: { name: "d" } };
  const decode = { where: "d", role: "decode", argv: ["decode", "--span-tokens", "64"], listenPort: 7420, labels,
                   ports: [], workload };
  const frontend = { where: "f", role: "frontend", argv: ["frontend", "--span-tokens", "32"], labels: {}, ports: [],
                     workload: {} };
  const service = { kind: "Service", metadata: { name: "d" }, spec: { selector: labels, ports: [{ port: 7420 }] } };
  const scope = { objects: [workload, service], commands: [decode, frontend] };
  const expected = [
    ["d:7420", "is not headless"],
    ["e:7420", "no Service e"],
    ["d:7421", "has no port 7421"],
  ];
  let rejected = 0;
  for (const [address, problem] of expected) {
    const { problems } = ResolveAddress("decode", address, scope);
    if (problems.some((p) => p.includes(problem))) ++rejected;
    else fail(`self-test: --decode ${address}: expected "${problem}", got ${JSON.stringify(problems)}`);
  }
  const [spanProblems] = SpanTokenProblems(scope.commands);
  if (spanProblems.some((p) => p.includes("--span-tokens differs"))) ++rejected;
  else fail(`self-test: --span-tokens 64 and 32 accepted (${JSON.stringify(spanProblems)})`);
  if (rejected === expected.length + 1) {
    console.log(
      "ok: self-test: a non-headless, a misspelled and a wrong-port --decode and unequal --span-tokens rejected",
    );
  }
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
const commandsByDir = new Map();
const ScopeObjects = (dir) => ScopeDirs(dir).flatMap((d) => (byDir.get(d) ?? []).map(({ object }) => object));
const ScopeOf = (dir) => ({
  objects: ScopeObjects(dir),
  commands: ScopeDirs(dir).flatMap((d) => commandsByDir.get(d) ?? []),
});
for (const [dir, objects] of byDir) {
  // Parents first, so that a later directory's ConfigMap of the same name wins.
  const configMaps = new Map(
    ScopeObjects(dir)
      .reverse()
      .filter((object) => object.kind === "ConfigMap")
      .map((object) => [object.metadata.name, object.data ?? {}]),
  );
  const commands = [];
  for (const { object, where } of objects) {
    if (!kWorkloadKinds.has(object.kind)) continue;
    const podSpec = object.kind === "Pod" ? object.spec : object.spec?.template?.spec;
    for (const container of [...(podSpec?.initContainers ?? []), ...(podSpec?.containers ?? [])]) {
      const command = CheckContainer(container, object, podSpec, configMaps, `${where}/${container.name}`);
      if (command !== null) commands.push(command);
    }
  }
  commandsByDir.set(dir, commands);
  numCommands += commands.length;
}

// --- wiring: addresses, discovery, --span-tokens (wiring.mjs) ---
let numAddresses = 0;
for (const [dir, commands] of commandsByDir) {
  for (const command of commands) {
    for (const { flag, address, problems, reached } of ResolveAddresses(command, ScopeOf(dir))) {
      for (const problem of problems) fail(`${command.where}: ${problem}`);
      if (problems.length > 0) continue;
      const headless = flag === "store" ? "" : " through a headless Service";
      const targets = reached.map((c) => c.where).join(", ");
      console.log(`ok: ${command.where}: --${flag} ${address} reaches ${targets}${headless}`);
      ++numAddresses;
    }
    if (command.role === "frontend" && FlagValue(command.argv, "decode") === undefined) {
      fail(`${command.where}: kvspan frontend without --decode (it needs at least one decode worker)`);
    }
    // Discovery: a frontend of this directory or a parent finds this worker.
    if (command.role !== "prefill" && command.role !== "decode") continue;
    const scope = ScopeOf(dir);
    const finders = scope.commands
      .filter((c) => c.role === "frontend")
      .filter((f) => ResolveAddresses(f, scope).some((a) => a.flag === command.role && a.reached.includes(command)));
    if (finders.length === 0) fail(`${command.where}: no frontend of its layout finds it (--${command.role})`);
    else console.log(`ok: ${command.where}: found by ${finders.map((f) => f.where).join(", ")} (--${command.role})`);
  }
}
const layouts = new Map();
for (const [dir, commands] of commandsByDir) {
  const layout = relative(kRoot, dir).split("/")[0];
  layouts.set(layout, [...(layouts.get(layout) ?? []), ...commands]);
}
for (const [layout, commands] of layouts) {
  const [problems, value] = SpanTokenProblems(commands);
  for (const problem of problems) fail(`${layout}: ${problem}`);
  const count = commands.filter((c) => c.role !== "cachestore").length;
  if (problems.length === 0 && count > 0) {
    console.log(`ok: ${layout}: --span-tokens ${value} on all ${count} of its roles' command lines`);
  }
}

if (numObjects === 0) fail(`no manifests under ${kRoot}`);
if (failures.length > 0) {
  console.log(`deploy check: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log(
  `deploy check: ${numObjects} objects in ${files.length} files valid, ` +
    `${numCommands} command lines accepted by kvspan, ${numAddresses} addresses resolved; all checks passed`,
);
