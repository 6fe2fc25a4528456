// The pgjdbc cell of the client matrix (tests/pgwire/clients/test_pgjdbc.py): what DBeaver,
// Metabase and Tableau do through JDBC. Prints one "name=value" line per check.
import java.math.BigDecimal;
import java.sql.*;

public class GovernJdbc {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection con = DriverManager.getConnection(url, args[1], args[2])) {
            DatabaseMetaData md = con.getMetaData();
            StringBuilder tables = new StringBuilder();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) tables.append(rs.getString("TABLE_NAME")).append(',');
            }
            System.out.println("tables=" + tables);
            StringBuilder cols = new StringBuilder();
            try (ResultSet rs = md.getColumns(null, "public", "patients", "%")) {
                while (rs.next()) cols.append(rs.getString("COLUMN_NAME")).append(':').append(rs.getString("TYPE_NAME")).append(',');
            }
            System.out.println("columns=" + cols);
            int fks = 0;
            try (ResultSet rs = md.getImportedKeys(null, "public", "encounters")) { while (rs.next()) fks++; }
            System.out.println("importedKeys=" + fks);
            System.out.println("keywordsNonEmpty=" + !md.getSQLKeywords().isEmpty());
            int types = 0;
            try (ResultSet rs = md.getTypeInfo()) { while (rs.next()) types++; }
            System.out.println("typeInfo=" + (types > 10));
            try (PreparedStatement ps = con.prepareStatement(
                    "SELECT count(*) FROM patients WHERE birth_date < ? AND charges > ?")) {
                ps.setDate(1, Date.valueOf("2030-01-01"));
                ps.setBigDecimal(2, new BigDecimal("10.5"));
                try (ResultSet rs = ps.executeQuery()) { rs.next(); System.out.println("prepared=" + (rs.getLong(1) > 0)); }
            }
            try (PreparedStatement ps = con.prepareStatement("SELECT CAST(? AS timestamp) AS t, CAST(? AS date) AS d")) {
                ps.setTimestamp(1, Timestamp.valueOf("2021-03-04 05:06:07"));
                ps.setDate(2, Date.valueOf("2020-02-29"));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    System.out.println("timestamp=" + rs.getTimestamp(1) + " date=" + rs.getDate(2));
                }
            }
            con.setAutoCommit(false);  // setFetchSize streams with a portal only inside a transaction
            try (Statement st = con.createStatement()) {
                st.setFetchSize(50);
                int n = 0;
                try (ResultSet rs = st.executeQuery("SELECT patient_id FROM patients")) { while (rs.next()) n++; }
                System.out.println("fetched=" + n);
            }
            con.commit();
            con.setAutoCommit(true);
            try (Statement st = con.createStatement()) {
                st.setQueryTimeout(1);
                long start = System.nanoTime();
                try {
                    st.executeQuery("SELECT count(*) FROM range(100000000000) a");
                    System.out.println("timeout=none");
                } catch (SQLException e) {
                    System.out.println("timeout=" + e.getSQLState() + " seconds=" + ((System.nanoTime() - start) / 1_000_000_000L));
                }
            }
            try (Statement st = con.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next(); System.out.println("afterTimeout=" + rs.getInt(1));
            }
        }
    }
}
