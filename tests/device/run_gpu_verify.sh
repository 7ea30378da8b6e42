#!/usr/bin/env bash
# On a GPU machine without a network (the `device` tool's H200): install Ansible from wheels carried in
# .whl/ (ansible-core and its dependencies, downloaded beforehand where pip works, see .whl/README or the
# device README), then run tests/device/gpu_verify.yml locally. Changes nothing on the host: gpu_facts reads,
# nvidia_driver runs in verify-only mode. Output goes to stdout and, when $OUT is set, to $OUT/gpu_verify.log.
#
#   tests/device/run_gpu_verify.sh [KIND] [extra ansible-playbook args]
#   KIND defaults to h200; the GPU count is what nvidia-smi -L lists.
set -euo pipefail
cd "$(dirname "$0")/../.."
kind=${1:-h200}; shift || true
site=/tmp/qwen35-ansible-site
if ! PYTHONPATH=$site python3 -c 'import ansible' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
export PYTHONPATH=$site PATH=$site/bin:$PATH LC_ALL=C.UTF-8 LANG=C.UTF-8
export ANSIBLE_ROLES_PATH=$PWD/roles ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=false
# the checkout as the collection qwen35.prov (the gpu_facts module is qwen35.prov.gpu_facts)
mkdir -p /tmp/qwen35-collections/ansible_collections/qwen35
ln -sfn "$PWD" /tmp/qwen35-collections/ansible_collections/qwen35/prov
export ANSIBLE_COLLECTIONS_PATH=/tmp/qwen35-collections
# what the driver reports for the kind and its vendor, from the planner's catalog (as the inventory writes them)
read -r vendor name < <(PYTHONPATH=$PWD:$site python3 -c "
from qwen35_prov.catalog import load_catalog
g = load_catalog().gpus['$kind']; print(g.vendor, g.name)")
count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
log=${OUT:-/tmp}/gpu_verify.log
echo "==> $(uname -r); nvidia-smi lists ${count} GPU(s); PID 1 is $(cat /proc/1/comm 2>/dev/null || echo '?')" | tee "$log"
set +e
ansible-playbook -c local -i localhost, tests/device/gpu_verify.yml \
  -e qwen35_gpu_kind="$kind" -e qwen35_gpu_count="$count" -e qwen35_driver_stack="$vendor" \
  -e "qwen35_gpu_name='$name'" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
echo "==> ansible-playbook exit $rc" | tee -a "$log"
exit "$rc"
