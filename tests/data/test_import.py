import subprocess
import sys


def test_import_stays_light():
    code = ("import sys, ternarylm.data; "
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
