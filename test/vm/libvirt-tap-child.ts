// A separate process for test/vm/libvirt-tap.test.ts to SIGKILL in the middle of a libvirt
// launch (between the host tap's creation and its move into the pod netns): it starts one
// pod VM with a tap on the libvirt backend and then waits to be killed.
//
//   node --import tsx test/vm/libvirt-tap-child.ts URI RUN_DIR NETNS
import { LibvirtConnection } from '../../src/vm/libvirt/binding.js';
import { LibvirtVm } from '../../src/vm/libvirt/libvirt-vm.js';
import { TAP_NAME } from '../../src/network/tap-redirect.js';
import { guestProfile, testConfinement } from '../helpers/vm.js';

const [uri, runDir, netns] = process.argv.slice(2);
if (!uri || !runDir || !netns) throw new Error('usage: libvirt-tap-child.ts URI RUN_DIR NETNS');
const conn = new LibvirtConnection(uri);
await LibvirtVm.launch(conn, { id: 'tapchild', profile: guestProfile(), runDir, netns, tap: { name: TAP_NAME, mac: '02:00:00:00:00:07' },
  confinement: testConfinement() });
console.log('launched');
setInterval(() => undefined, 60_000);
