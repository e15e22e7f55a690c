// The `ferry` command line.

import { Command, CommanderError } from 'commander';
import { FAULT_THREAD_NICE } from '../host/fault-path.ts';
import { ScenarioError } from '../sim/scenario.ts';
import { demoCommand } from './demo.ts';
import { UsageError } from './errors.ts';
import { experimentCommand } from './experiment.ts';
import { hostCommand, migrateCommand, vmCreateCommand, vmListCommand, vmStopCommand } from './hosts.ts';
import { registerLab } from './lab.ts';
import {
  parseAppOption,
  parseCount,
  parseLatency,
  parseNice,
  parseNumber,
  parsePort,
  parseSeed,
  parseWhole,
} from './option-parsers.ts';
import { reportCommand } from './report.ts';
import { simCommand } from './sim.ts';
import { switchCommand } from './switch.ts';
import { validateCommand } from './validate.ts';

// Output piped into `head` and the like: stop quietly when the reader goes away.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const program = new Command('ferry')
  .description(
    'Live migration of virtual machines: precopy, postcopy with guest-cooperative page faults, hybrid.',
  )
  .version('0.1.0')
  // usage errors are one line, like every other bad-input error
  .configureOutput({
    outputError: (str, write) =>
      write(`ferry: ${str.replace(/^error: /, '').trim()} (add --help for usage)\n`),
  })
  .exitOverride();

program
  .command('sim')
  .description('run a scenario in the simulator (virtual time) and print a summary')
  .argument('<scenario>', 'scenario file (YAML)')
  .option('--seed <n>', 'random seed (same scenario + seed ⇒ identical report)', parseSeed, 1)
  .option('--json <file>', 'write the report as JSON')
  .option('--quiet', 'print no summary')
  .option('--threads <n>', 'worker threads for variants (default: one per core)', parseCount)
  .action(simCommand);

program
  .command('validate')
  .description('replay measured migrations in the simulator and compare durations')
  .argument('<dataset>', 'dataset kind: g5k (Grid’5000 KVM migrations)')
  .requiredOption('--data <dir>', 'dataset folder (with input/ and real/)')
  .option('--json <file>', 'write the comparison as JSON')
  .option('--worst <n>', 'how many worst cases to list', (v) => Number.parseInt(v, 10), 10)
  .option('--scenarios <list>', 'only these scenario numbers, e.g. 13-25 or 1,4-6')
  .option('--efficiency <x>', 'goodput ÷ line rate (default: Ethernet framing, 0.9415)', Number.parseFloat)
  .option('--setup-ms <ms>', 'per-migration setup time (default 1300)', Number.parseFloat)
  .option(
    '--interference <x>',
    'receive capacity lost per unit of transmit throughput, every node (default: 0.08, south 0.06, west 0.12)',
    Number.parseFloat,
  )
  .option('--hot-pattern <p>', 'how the hot set is rewritten: none | burst | sweep | once (default none)')
  .action(validateCommand);

program
  .command('demo')
  .description(
    'the main job: two hosts and the switch start here, a VM under load migrates while you watch; a summary and an HTML report follow',
  )
  .option('--mode <mode>', 'precopy | postcopy | hybrid', 'postcopy')
  .option('--blocking', 'remote faults stall the whole vCPU (default: cooperative)')
  .option('--ram <MiB>', 'VM RAM in MiB (default 256; --sim: 2048)', (v) => Number.parseInt(v, 10))
  .option('--vcpus <n>', 'vCPUs of the VM (default 2; --sim: 4)', (v) => Number.parseInt(v, 10))
  .option('--workload <kind>', 'kv | http (default kv; --sim: web | oltp | memtouch | idle, default web)')
  .option(
    '--client <kind>',
    'auto | builtin | redis-benchmark | wrk (auto: the real tool when installed)',
    'auto',
  )
  .option('--max-bandwidth <Mbps>', 'cap on the page rate', parseNumber('--max-bandwidth'), 1000)
  .option(
    '--latency <ms>',
    'latency each host adds to its migration lanes, as hosts further apart (try it with and without --blocking)',
    parseLatency,
    0,
  )
  .option('--no-warm-up', 'skip the small migration there and back that warms the new hosts first')
  .option('--sim', 'run the demo in the simulator (virtual time) instead')
  .option('--json <file>', 'write the report as JSON')
  .option('--html <file>', 'where to write the HTML report', 'out/demo-report.html')
  .action(demoCommand);

program
  .command('experiment')
  .description(
    'the paper experiment: kv under redis-benchmark and http under wrk, by precopy and postcopy (blocking, cooperative), measured and simulated',
  )
  .argument('<name>', 'experiment name (paper)')
  .option('--real', 'run it for real (a shaped 1 Gbit/s lab when root, else loopback); about 2 minutes')
  .option('--sim', 'run the same configuration in the simulator')
  .option('--both', 'both, with measured and simulated side by side per metric and their ratio')
  .option('--loopback', 'real runs on loopback even when root (pages capped at 1 Gbit/s by the migration)')
  .option('--quick', 'smaller VMs (64 MiB) and shorter runs')
  .option('--json <file>', 'write the report(s) as JSON')
  .option('--html <file>', 'write an HTML report')
  .action(experimentCommand);

program
  .command('report')
  .description('render a report JSON as one self-contained HTML page')
  .argument('<report>', 'report JSON written by sim, demo or migrate')
  .requiredOption('-o, --output <file>', 'HTML file to write')
  .action(reportCommand);

const DEFAULT_HOST = process.env.FERRY_HOST ?? 'http://127.0.0.1:7001';

program
  .command('host')
  .description('run a host: VMs, the control API and migrations to and from other hosts')
  .requiredOption('--listen <addr:port>', 'control API address, e.g. 127.0.0.1:7001')
  .requiredOption('--id <name>', "this host's name")
  .option('--secret-file <file>', 'the secret shared by all hosts (hex or raw, ≥ 16 bytes)')
  .option('--lanes-port <port>', 'TCP port for migration lanes (default: any free port)', parsePort, 0)
  .option(
    '--urgent-port <port>',
    'TCP port for the urgent lanes of migrations into this host, on its fault thread (default: any free port)',
    parsePort,
    0,
  )
  .option('--switch <addr:port>', "the virtual switch its VMs' clients come through (default: a port per VM)")
  .option(
    '--ram-pool <MiB>',
    'guest RAM kept mapped, once its VM left or stopped, for the next VMs of the same size (0: none)',
    parseWhole,
    2048,
  )
  .option(
    '--lane-latency <ms>',
    'latency added to every message reaching this host on a migration lane, as over a longer link (user space: this kernel has no netem)',
    parseLatency,
    0,
  )
  .option(
    '--spare-vcpus <n>',
    'vCPU threads kept started, so a VM created or moving in boots without waiting for one (0: none)',
    parseWhole,
    2,
  )
  .option(
    '--fault-thread-nice <n>',
    "nice value of the thread that serves remote faults, ahead of the host's other work (below 0 needs root or CAP_SYS_NICE; 0: the host's own)",
    parseNice,
    FAULT_THREAD_NICE,
  )
  .action(hostCommand);

program
  .command('switch')
  .description('run the virtual switch: a stable client address per VM, following the VM between hosts')
  .requiredOption('--listen <addr:port>', 'where hosts link to the switch, e.g. 127.0.0.1:7100')
  .option('--secret-file <file>', 'the secret shared by the switch and all hosts')
  .option('--clients-host <addr>', "address of the VMs' client ports", '127.0.0.1')
  .action(switchCommand);

const vm = program.command('vm').description('create, list and stop VMs on a host');
vm.command('create')
  .description('start a VM running an app')
  .argument('<name>', 'VM name')
  .option('--host <url>', 'control API of the host', DEFAULT_HOST)
  .option('--secret-file <file>', "the hosts' shared secret")
  .option('--ram <MiB>', 'guest RAM in MiB', parseCount, 64)
  .option('--vcpus <n>', 'vCPUs', parseCount, 1)
  .option('--app <kind>', 'kv | http | memtouch', 'kv')
  .option('--servers <n>', 'server tasks per vCPU', parseCount, 8)
  .option(
    '--set <key=value>',
    'an app option, repeatable (memtouch: rateMBps, workingSetBytes, pagesPerStep, prefill, pattern; http: see the README)',
    parseAppOption,
  )
  .action(vmCreateCommand);
vm.command('list')
  .description('list the VMs on a host')
  .option('--host <url>', 'control API of the host', DEFAULT_HOST)
  .option('--secret-file <file>', "the hosts' shared secret")
  .option('--json', 'print JSON')
  .action(vmListCommand);
vm.command('stop')
  .description('stop a VM and free its memory')
  .argument('<name>', 'VM name')
  .option('--host <url>', 'control API of the host', DEFAULT_HOST)
  .option('--secret-file <file>', "the hosts' shared secret")
  .action(vmStopCommand);

program
  .command('migrate')
  .description('move a running VM to another host, with progress and a summary')
  .argument('<vm>', 'VM name')
  .requiredOption('--to <url>', 'control API of the destination host')
  .option('--host <url>', 'control API of the host the VM runs on', DEFAULT_HOST)
  .option('--secret-file <file>', "the hosts' shared secret")
  .option('--mode <mode>', 'precopy | postcopy | hybrid', 'postcopy')
  .option('--cooperative', 'remote faults park only the faulting task (default)')
  .option('--blocking', 'remote faults stall the whole vCPU')
  .option('--downtime-limit <ms>', 'precopy stop rule', parseNumber('--downtime-limit'), 300)
  .option('--max-bandwidth <Mbps>', 'cap on the page rate', parseNumber('--max-bandwidth'))
  .option('--prepage <n>', 'pages sent after each faulted page', parseNumber('--prepage'), 7)
  .option('--json <file>', 'write the report as JSON')
  .action(migrateCommand);

registerLab(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exit(e.exitCode === 0 ? 0 : 2);
  }
  if (e instanceof UsageError || e instanceof ScenarioError) {
    console.error(`ferry: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
