"""
The Snowflake set-up for what eventpipe delivers (C{eventpipe
snowflake-sql}): L{eventpipe.snowflake.script.snowflake_sql} joins the
parts every cloud shares (L{eventpipe.snowflake.parts}) with one
provider's (L{eventpipe.snowflake.aws}, L{eventpipe.snowflake.azure},
L{eventpipe.snowflake.gcp}),
each a L{eventpipe.snowflake.sql.Provider}.  Pure text.
"""
