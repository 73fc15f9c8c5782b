# Shared set-up, read by every stage file (the Snakefile includes this file first):
# - the config, validated once (`dermsynth.config.validate_config(..., workflow=True)`: the schema, defaults, every
#   cross-reference between stages; a wrong key stops here, named) and the warnings said at planning;
# - the cluster settings this Snakemake release would misread (refused) or that are placeholders (said);
# - `step_options` (each job's options file, dermsynth.options), job resources (`gpu_threads`, `gpu_resources`,
#   `SMALL_JOB`) and `one_of` (a wildcard constraint of listed names).
# Each stage's paths, lists and input functions live with the stage: helpers/<stage>.smk, included by the stage's
# rule file <stage>.smk (data, gan, metrics, latent, federated, classify, explain); a later stage may read what an
# earlier one defines.

import re
import sys
from pathlib import Path

from snakemake import __version__ as SNAKEMAKE_VERSION

from dermsynth.config import data_size_warnings, validate_config
from dermsynth.data.options import current_manifest

# The config files in use: the demo's config/config.yaml unless --configfile (or a profile) gave others,
# which replace it (see the Snakefile); --config key=value applies on top.
CONFIG_FILES = [str(Path(p).relative_to(Path.cwd())) if Path(p).is_relative_to(Path.cwd()) else str(p)
                for p in workflow.config_settings.configfiles] or ["config/config.yaml"]
# `--configfile` takes several files, so a target written after it is read as one more config file. Snakemake
# itself stops on a target that does not exist yet (a traceback) or is not a mapping, before this file runs; a target
# that exists and is a JSON mapping (splits.json, a metrics JSON) is loaded as config and reaches this line: say so.
for path in CONFIG_FILES:
    if Path(path).parts[:1] == ("results",):
        print(f"dermsynth: error: {path} was read as a config file: give targets before --configfile (snakemake "
              f"{path} --configfile my.yaml), or end the config files with -- (snakemake --configfile my.yaml -- "
              f"{path})", file=sys.stderr)
        sys.exit(1)

# Only the --config values are read as the schema's types (Snakemake gives nested ones as strings); a config file's
# `batch: "8"` is refused, naming the key.
config = validate_config(config, workflow=True, overrides=workflow.config_settings.config, origin="the workflow config ("
                         + " + ".join(CONFIG_FILES) + (" + --config" if workflow.config_settings.config else "") + ")")

# What the user sets is what runs (issue 27): Snakemake 9.16.3-9.19.0 read a `runtime` given in a profile or with
# --set-resources/--default-resources as seconds, not minutes (snakemake/snakemake#4039, fixed in 9.20.0): a
# train_gan job of 100 hours would be submitted for 100 minutes. pyproject.toml excludes those releases; an
# environment that has one anyway (conda, an older install) is stopped here, before any job is submitted.
RUNTIME_AS_SECONDS = [(9, 16, 3), (9, 20, 0)]  # [first broken release, first fixed release)


def _given_runtimes():
    """Where a `runtime` came from the profile or the command line (default-resources, set-resources)."""
    settings = workflow.resource_settings
    where = ["default-resources"] if "runtime" in (settings.default_resources or {}) else []
    return where + [f"set-resources {rule}" for rule, res in (settings.overwrite_resources or {}).items()
                    if "runtime" in res]


def default_resource(name):
    """A string default resource of the profile or --default-resources as written (None when not given)."""
    defaults = workflow.resource_settings.default_resources
    if not defaults or name not in defaults:
        return None
    value = getattr(defaults[name], "raw", None)
    return None if value is None else str(value).strip("'\"")


def _release(version):
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


PLACEHOLDER_ACCOUNT = "my_project"  # profiles/slurm/config.yaml's until the user sets theirs


def placeholder_account():
    """What to do about the SLURM account when it is still the profile's placeholder (None: it is not)."""
    if default_resource("slurm_account") != PLACEHOLDER_ACCOUNT:
        return None
    return (f"default-resources.slurm_account is still the placeholder '{PLACEHOLDER_ACCOUNT}': set `slurm_account` "
            "to your account in profiles/slurm/config.yaml (or give --default-resources slurm_account=<account>), "
            "or remove it and set `slurm-no-account: true`")


def cluster_settings_problems(snakemake_version):
    """Lines about the profile's cluster settings: a broken Snakemake release with a runtime from the profile or
    the command line is an error (raised); a placeholder SLURM account is a warning when planning (returned) and
    an error when jobs would be submitted (`onstart` below)."""
    given = _given_runtimes()
    if given and RUNTIME_AS_SECONDS[0] <= _release(snakemake_version) < RUNTIME_AS_SECONDS[1]:
        raise ValueError(f"snakemake {snakemake_version} reads the runtime of {', '.join(given)} (minutes) as seconds "
                         "(snakemake/snakemake#4039): jobs would get a 60th of their time; install a release without "
                         "the bug: pip install 'snakemake>=9.20' (pyproject.toml excludes 9.16.3-9.19.0)")
    account = placeholder_account()
    return [f"warning: {account} (a run would stop before submitting)"] if account else []


for message in cluster_settings_problems(SNAKEMAKE_VERSION):
    print(f"dermsynth: {message}", file=sys.stderr)


onstart:
    # Runs when jobs are about to be started, never on a dry run (nor in the jobs themselves: --no-hooks): a job
    # submitted under the placeholder account would be rejected by SLURM, or charged to someone else's project.
    if workflow.executor_plugin.name == "slurm" and placeholder_account():
        print(f"dermsynth: error: {placeholder_account()}; nothing was submitted", file=sys.stderr)
        sys.exit(1)

# Sizes the split data cannot support (a batch above its training images, a class missing from a validation or
# test split): said now, naming the config key, when the dataset's manifest exists (issue 27, kind 5)
for message in data_size_warnings(config, lambda dataset: current_manifest(config, dataset)):
    print(f"dermsynth: {message}", file=sys.stderr)


def step_options(options_class):
    """A `params:` function giving the job's options file (`dermsynth.options`): `options_class` built from the
    validated config and the job's wildcards, written content-addressed, so changing a key the options hold
    re-runs exactly the jobs that hold it."""
    def options_file(wildcards):
        names = options_class.wildcards
        return options_class.from_config(config, **{name: getattr(wildcards, name) for name in names}).write()
    return options_file


def _section_of(section):
    return section if callable(section) else (lambda wildcards: section)


def gpu_threads(section, cpu=1):
    """Threads of a job whose config `section` (a dict, or a function of the wildcards) has `gpus`: 8 per
    GPU, else `cpu`."""
    get = _section_of(section)
    return lambda wildcards: 8 * get(wildcards)["gpus"] if get(wildcards)["gpus"] else cpu


# SLURM partitions (profiles/slurm): jobs with GPUs go to default-resources.slurm_gpu_partition, every other job
# stays on default-resources.slurm_partition (a CPU-only job never queues for, nor holds, a GPU node).
CPU_PARTITION, GPU_PARTITION = default_resource("slurm_partition"), default_resource("slurm_gpu_partition")


def gpu_resources(section, cpu_mem_mb=16000, gpu_mem_mb=16000):
    """`gpu`, `mem_mb` and `runtime` (minutes) of a job whose config `section` (a dict, or a function of the
    wildcards) has `gpus` and `runtime_hours`; memory and time grow with each retry (`attempt`). With a profile
    that names both partitions, also `slurm_partition`: the GPU one when the job has GPUs."""
    get = _section_of(section)
    resources = {"gpu": lambda wildcards: get(wildcards)["gpus"],
                 "mem_mb": lambda wildcards, attempt: (gpu_mem_mb if get(wildcards)["gpus"] else cpu_mem_mb) * attempt,
                 "runtime": lambda wildcards, attempt: int(get(wildcards)["runtime_hours"] * 60 * attempt)}
    if CPU_PARTITION and GPU_PARTITION:
        resources["slurm_partition"] = lambda wildcards: GPU_PARTITION if get(wildcards)["gpus"] else CPU_PARTITION
    return resources


SMALL_JOB = {"mem_mb": 2000, "runtime": 10}  # tables, filters, previews, the weights record: minutes, little memory


def one_of(names, none):
    """A wildcard constraint matching exactly `names` (escaped); `none`, a name no file has, when there are none."""
    return "|".join(map(re.escape, names)) or none
