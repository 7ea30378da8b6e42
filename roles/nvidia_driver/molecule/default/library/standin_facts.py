#!/usr/bin/python
"""TEST DOUBLE (Molecule only): report the given facts as the host's own, for example `architecture: aarch64` on an
x86_64 test node standing in for a GB200 tray's Grace CPU, so the role's architecture-dependent paths run here.
Ansible merges a module's `ansible_facts` into the host's facts; nothing on the node changes."""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={"facts": {"type": "dict", "required": True}}, supports_check_mode=True)
    module.exit_json(changed=False, ansible_facts=module.params["facts"])


if __name__ == "__main__":
    main()
