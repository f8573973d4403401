import { volumesSuite } from './volumes-suite.js';

// Volumes over the sandbox's virtio-fs share (the default share mode).
volumesSuite('virtiofs');
