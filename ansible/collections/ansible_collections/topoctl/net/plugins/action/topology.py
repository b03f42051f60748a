# -*- coding: utf-8 -*-
"""Action plugin of topoctl.net.topology: `host` defaults to the task's inventory hostname,
which a module running on the target cannot see."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        args = dict(self._task.args)
        if args.get("host") is None:  # not given, null, or "{{ omit }}"; "" asks topoctl to pick
            args["host"] = task_vars.get("inventory_hostname")
        result.update(self._execute_module(module_name="topoctl.net.topology", module_args=args,
                                           task_vars=task_vars))
        return result
