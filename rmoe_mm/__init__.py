"""rmoe_mm: importing it registers every module for the mmseg and mmdet scopes."""
