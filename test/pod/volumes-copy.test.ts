import { volumesSuite } from './volumes-suite.js';

// The same cases in share mode "copy" (what VM-template clones use), forced on a cold VM by [volumes] share_mode.
volumesSuite('copy');
