"""diffcodec's version (a bottom-layer module: the checkpoint writers record it without importing the
package root)."""

__version__ = "0.1.0.dev0"
