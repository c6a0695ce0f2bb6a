import os
import sys
from pathlib import Path

# test helper modules (cli.py, fixtures) are imported by name
sys.path.insert(0, str(Path(__file__).parent))
# Rich reads COLUMNS when its consoles are created: wide, so tables do not wrap in assertions
os.environ["COLUMNS"] = "200"
