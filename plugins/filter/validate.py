# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""validate.yml's five checks (module_utils/_validate.py)."""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._validate import checks


def validate_checks(manifest, host, stack=None, app_image=False, image_source="host", controller_image=None,
                    port=None, port_owned=False, nginx_test=None, tls_errors=None):
    return checks(dict(manifest), str(host), stack=stack, app_image=bool(app_image), image_source=image_source,
                  controller_image=controller_image or None, port=port, port_owned=bool(port_owned),
                  nginx_test=nginx_test, tls_errors=list(tls_errors or []))


class FilterModule(object):
    def filters(self):
        return {"validate_checks": validate_checks}
