// The lab from code: hosts in network namespaces behind shaped links, for tests and experiments.
//
//   await withLab({ hosts: ['a', 'b'], mbps: 100, switch: false }, async (lab) => {
//     // lab.hosts[i].url, lab.secretHex, inNetns(lab.hosts[0].netns, ['node', 'client.js'])
//   });

export {
  down,
  inNetns,
  type Lab,
  LabError,
  type LabOptions,
  type LabState,
  labProcesses,
  labStatus,
  startLab,
  up,
  withLab,
} from './lab.ts';
export { tbfBurstBytes, tbfFor } from './netns.ts';
