"""
Settings: the table of options (L{eventpipe.config.table}), their
converters, env files, endpoints and networks, the option parser of
C{twistd eventpipe} (L{eventpipe.config.options}) and the validated
L{eventpipe.config.settings.Settings} the stages are given.

Imports run one way: the table and the converters know nothing of the
parser; the parser imports the settings, never the reverse.
"""
