"""The SingingHead paper's 3D metrics (§V), computed the way the official metric code does."""
