// A real single-node HDFS (MiniDFSCluster) on 127.0.0.1 for the tests, run as a single-file Java
// program: java -cp <jars> MiniHdfs.java <base dir> <namenode port> <http port>
// Prints "READY hdfs://127.0.0.1:<port>" once the cluster is up and stops when stdin closes.
import java.io.File;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public class MiniHdfs {
    public static void main(String[] args) throws Exception {
        File base = new File(args[0]);
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getAbsolutePath());
        conf.set("dfs.namenode.rpc-address", "127.0.0.1:" + args[1]);
        conf.set("dfs.namenode.http-address", "127.0.0.1:" + args[2]);
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.permissions.enabled", "false");
        conf.setBoolean("dfs.webhdfs.enabled", true);
        conf.setInt("dfs.replication", 1);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
            .nameNodePort(Integer.parseInt(args[1]))
            .nameNodeHttpPort(Integer.parseInt(args[2]))
            .numDataNodes(1)
            .format(true)
            .build();
        cluster.waitActive();
        System.out.println("READY hdfs://127.0.0.1:" + cluster.getNameNodePort());
        System.out.flush();
        while (System.in.read() != -1) { }
        cluster.shutdown(true);
    }
}
