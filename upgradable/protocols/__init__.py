"""
Sample protocols to upgrade to.
"""
