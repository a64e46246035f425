"""``python -m ohlora_eval.compare``: see ``ohlora_eval/apps/compare.py``.

Also ``ohlora_eval.compare(a, b)``, the Python API: importing this module binds it as the
package's attribute ``compare``, so the module itself calls the API."""

import sys
from types import ModuleType

from ohlora_eval.apps.commands import compare as main


class _CallableModule(ModuleType):
    def __call__(self, *args, **kwargs):
        from ohlora_eval.tracking.compare_runs import compare

        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
