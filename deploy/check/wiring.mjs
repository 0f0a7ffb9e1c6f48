// How the roles of a layout reach each other, checked on the manifests alone (check.mjs):
// each address flag (`--store`, `--prefill`, `--decode`) must name a Service of the layout
// that selects pods running that role and listening on the Service port's target, and
// `--span-tokens` must be equal on every role. Pure functions over parsed objects, so that
// check.mjs can self-test them on broken layouts.
//
// A "command" is one container's expanded command line: { where, role, argv, listenPort,
// labels (its pod template's), ports (the container's), workload (the object) }.
// A "scope" is { objects, commands }: what a directory sees (its own and its parents').

// The value of `--name` in argv (either `--name value` or `--name=value`), or undefined.
export function FlagValue(argv, name) {
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === `--${name}` && i + 1 < argv.length) return argv[i + 1];
    if (argv[i].startsWith(`--${name}=`)) return argv[i].slice(name.length + 3);
  }
  return undefined;
}

// The role each address flag must reach, and whether the reader wants every pod of it
// (the frontend resolves the name to all its A records: only a headless Service gives one
// record per pod; a ClusterIP Service would look like a single worker).
export const kAddressFlags = {
  store: { role: "cachestore", headless: false },
  prefill: { role: "prefill", headless: true },
  decode: { role: "decode", headless: true },
};

// The roles whose flags include --span-tokens (all but the cache store).
const kSpanRoles = new Set(["serve", "prefill", "decode", "frontend"]);

const Selects = (selector, labels) =>
  Object.entries(selector ?? {}).length > 0 &&
  Object.entries(selector).every(([key, value]) => labels?.[key] === value);

// The container port a Service port reaches on `command`'s container (a name or a number).
function TargetPort(servicePort, command) {
  const target = servicePort.targetPort ?? servicePort.port;
  if (typeof target === "number") return target;
  return command.ports.find((p) => p.name === target)?.containerPort;
}

// Resolves one `host:port` of address flag `flag` in `scope`. Returns { problems, reached }:
// problems (strings, empty when the address works) and the commands it reaches. The host is
// `SERVICE[.NAMESPACE...]` or, for one StatefulSet pod, `STATEFULSET-N.SERVICE[...]`.
export function ResolveAddress(flag, address, scope) {
  const want = kAddressFlags[flag];
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port <= 0) {
    return { problems: [`--${flag} ${address}: not host:port`], reached: [] };
  }
  const services = new Map(scope.objects.filter((o) => o.kind === "Service").map((o) => [o.metadata?.name, o]));
  const labels = host.split(".");
  let service = services.get(labels[0]);
  let pods = null;  // one StatefulSet's pods, when the host names one
  const Fail = (problem) => ({ problems: [`--${flag} ${address}: ${problem}`], reached: [] });
  if (labels.length >= 2 && services.has(labels[1])) {
    const match = /^(.+)-(\d+)$/.exec(labels[0]);
    const set = match && scope.objects.find((o) => o.kind === "StatefulSet" && o.metadata?.name === match[1]);
    if (set && set.spec?.serviceName === labels[1]) {
      service = services.get(labels[1]);
      if (Number(match[2]) >= (set.spec.replicas ?? 1)) {
        return Fail(`StatefulSet ${match[1]} has ${set.spec.replicas ?? 1} replica(s)`);
      }
      if (service.spec?.clusterIP !== "None") {
        return Fail("pod names need a headless governing Service");
      }
      pods = set;
    }
  }
  if (!service) return Fail(`no Service ${labels[0]} in this layout`);
  const name = service.metadata.name;
  const problems = [];
  const Problem = (problem) => problems.push(`--${flag} ${address}: Service ${name} ${problem}`);
  if (want.headless && service.spec?.clusterIP !== "None") {
    Problem("is not headless, so every worker behind it looks like one");
  }
  const servicePort = (service.spec?.ports ?? []).find((p) => p.port === port);
  if (!servicePort) Problem(`has no port ${port}`);
  const selected = scope.commands.filter(
    (c) => Selects(service.spec?.selector, c.labels) && (pods === null || c.workload === pods),
  );
  const reached = selected.filter((c) => c.role === want.role);
  if (reached.length === 0) Problem(`selects no \`kvspan ${want.role}\` pods`);
  for (const c of selected) {
    if (c.role !== want.role) Problem(`also selects ${c.where} (kvspan ${c.role})`);
  }
  if (servicePort) {
    for (const c of reached) {
      const target = TargetPort(servicePort, c);
      if (target !== c.listenPort) {
        Problem(`port ${port} reaches port ${target} of ${c.where}, which listens on ${c.listenPort}`);
      }
    }
  }
  return { problems, reached };
}

// Every address flag of `command`, resolved in `scope`: [{ flag, address, problems, reached }].
export function ResolveAddresses(command, scope) {
  const out = [];
  for (const flag of Object.keys(kAddressFlags)) {
    const value = FlagValue(command.argv, flag);
    if (value === undefined) continue;
    for (const address of value.split(",").filter((a) => a !== "")) {
      out.push({ flag, address, ...ResolveAddress(flag, address, scope) });
    }
  }
  return out;
}

// --span-tokens over one layout's commands: every role that has the flag sets it, to one
// value. Returns [problems, the value].
export function SpanTokenProblems(commands) {
  const problems = [];
  const values = new Map();
  for (const c of commands.filter((c) => kSpanRoles.has(c.role))) {
    const value = FlagValue(c.argv, "span-tokens");
    if (value === undefined) problems.push(`${c.where}: no --span-tokens (it must be equal on every role: set it)`);
    else values.set(value, [...(values.get(value) ?? []), c.where]);
  }
  if (values.size > 1) {
    problems.push(`--span-tokens differs: ${[...values].map(([v, w]) => `${v} on ${w.join(", ")}`).join("; ")}`);
  }
  return [problems, [...values.keys()][0]];
}
