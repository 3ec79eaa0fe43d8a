"""Asset names resolve from ``promptcore.assets`` alone: a miss loads the plugins that register the assets."""

import subprocess
import sys


def test_assets_resolve_without_importing_a_package_first():
    code = (
        "import sys\n"
        "from promptcore import assets\n"
        "assert 'vpt' not in sys.modules and 'textpt' not in sys.modules\n"
        "print(assets.get_asset('fashion_mnist').name)\n"
        "try:\n"
        "    assets.asset_path('fashion_mnistt')\n"
        "except assets.UnknownAssetError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "fashion_mnist"
    assert "Did you mean 'fashion_mnist'" in out[1] and "minilm_l6" in out[1]
