import os
import sys
from pathlib import Path

# make tests/_tiny.py importable and keep every test off the network
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
