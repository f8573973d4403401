import { volumesSuite } from './volumes-suite.js';

// The same cases on a sandbox cloned from a VM template: a clone's RAM is a private mapping, so
// the launcher gives it share mode copy (no device, no helper) whatever [volumes] share_mode says.
volumesSuite('clone');
