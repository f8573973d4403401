/**
 * The parts of an OCI image config (`config` in the image config JSON) that shape
 * a container's process. Field names are the OCI/Docker ones.
 */
export interface OciImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  StopSignal?: string;
  Labels?: Record<string, string>;
}
